"""``penpay-sandbox`` as a real process: every listener on the ports the environment gives it, one log line per
listener, and a clean exit 0 on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.ports import free_ports

pytestmark = pytest.mark.contract


@dataclass
class Sandbox:
    process: asyncio.subprocess.Process
    ports: dict[str, int]

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.ports['PENPAY_SANDBOX_HTTP_PORT']}"

    async def stop(self, sig: signal.Signals) -> tuple[int, list[dict[str, object]]]:
        self.process.send_signal(sig)
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout=10)
        lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
        assert self.process.returncode is not None
        return self.process.returncode, lines


async def start_sandbox(workdir: Path, **extra: str) -> Sandbox:
    names = ("PENPAY_SANDBOX_DARAJA_PORT", "PENPAY_SANDBOX_DERIV_PORT", "PENPAY_SMTP_PORT", "PENPAY_SANDBOX_HTTP_PORT")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PENPAY_SANDBOX_CALLBACK_DELAY_MS": "20", **extra}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "penpay.sandbox.main",
        cwd=workdir,  # no stray .env
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Sandbox(process, ports)
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(150):
            try:
                if (await http.get(f"{running.control}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        else:
            process.kill()
            pytest.fail("the sandbox did not answer /healthz within 15 s")
    return running


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    running = await start_sandbox(tmp_path)
    yield running
    if running.process.returncode is None:
        running.process.kill()
        await running.process.wait()


class TestSandboxProcess:
    async def test_every_listener_answers_and_sigterm_exits_zero(self, sandbox: Sandbox) -> None:
        ports = sandbox.ports
        async with httpx.AsyncClient(timeout=5) as http:
            daraja = await http.get(
                f"http://127.0.0.1:{ports['PENPAY_SANDBOX_DARAJA_PORT']}/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=("sandbox-consumer-key", "sandbox-consumer-secret"),
            )
            assert daraja.status_code == 200
            assert daraja.json()["expires_in"] == "3599"
            certificate = await http.get(f"{sandbox.control}/daraja/certificate")
            assert certificate.content.startswith(b"-----BEGIN CERTIFICATE-----")

            async with connect(f"ws://127.0.0.1:{ports['PENPAY_SANDBOX_DERIV_PORT']}/websockets/v3") as ws:
                await ws.send(json.dumps({"ping": 1, "req_id": 7}))
                pong = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (pong["msg_type"], pong["req_id"]) == ("ping", 7)

            message = EmailMessage()
            message["From"] = "no-reply@penpay.local"
            message["To"] = "cr1234567@sandbox.deriv.test"
            message["Subject"] = "hello"
            message.set_content("sandbox")
            await aiosmtplib.send(message, hostname="127.0.0.1", port=ports["PENPAY_SMTP_PORT"], timeout=5)
            mail = (await http.get(f"{sandbox.control}/mail", params={"to": "cr1234567@sandbox.deriv.test"})).json()
            assert [m["subject"] for m in mail] == ["hello"]

        code, logs = await sandbox.stop(signal.SIGTERM)
        assert code == 0
        listening = {str(line["service"]): str(line["url"]) for line in logs if line["event"] == "sandbox_listening"}
        assert listening == {
            "daraja": f"http://127.0.0.1:{ports['PENPAY_SANDBOX_DARAJA_PORT']}",
            "deriv": f"ws://127.0.0.1:{ports['PENPAY_SANDBOX_DERIV_PORT']}/websockets/v3",
            "smtp": f"smtp://127.0.0.1:{ports['PENPAY_SMTP_PORT']}",
            "control": f"http://127.0.0.1:{ports['PENPAY_SANDBOX_HTTP_PORT']}",
        }

    async def test_sigint_stops_it_cleanly_too(self, sandbox: Sandbox) -> None:
        code, logs = await sandbox.stop(signal.SIGINT)
        assert code == 0
        assert any(line["event"] == "sandbox_stopped" for line in logs)


class TestDerivBooksAcrossRestarts:
    async def test_a_killed_sandbox_remembers_every_transfer_it_answered(self, tmp_path: Path) -> None:
        state = {"PENPAY_SANDBOX_STATE_DIR": str(tmp_path / "state")}
        first = await start_sandbox(tmp_path, **state)
        try:
            url = f"ws://127.0.0.1:{first.ports['PENPAY_SANDBOX_DERIV_PORT']}/websockets/v3"
            async with connect(url) as ws:
                await ws.send(json.dumps({"authorize": "sandbox-agent-token-CR900000", "req_id": 1}))
                assert "error" not in json.loads(await asyncio.wait_for(ws.recv(), 5))
                transfer = {"paymentagent_transfer": 1, "transfer_to": "CR1234567", "amount": 12.5, "currency": "USD"}
                await ws.send(json.dumps({**transfer, "description": "ref-1", "req_id": 2}))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer["paymentagent_transfer"] == 1, answer
            async with httpx.AsyncClient(timeout=5) as http:
                before = {
                    loginid: (await http.get(f"{first.control}/deriv/accounts/{loginid}")).json()
                    for loginid in ("CR900000", "CR1234567")
                }
        finally:
            first.process.kill()  # SIGKILL: no shutdown, nothing written on the way out
            await first.process.wait()

        second = await start_sandbox(tmp_path, **state)
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                after = {
                    loginid: (await http.get(f"{second.control}/deriv/accounts/{loginid}")).json()
                    for loginid in ("CR900000", "CR1234567")
                }
        finally:
            code, logs = await second.stop(signal.SIGTERM)
        assert after == before
        assert after["CR900000"]["balance"] == "999987.50"
        assert after["CR1234567"]["statement"][0]["transaction_id"] == answer["transaction_id"] + 1
        assert code == 0
        books = [line for line in logs if line["event"] == "sandbox_deriv_books"]
        assert books and books[0]["replayed_changes"] == 2  # the opening and the transfer

    async def test_unreadable_books_stop_it_with_one_line_that_says_where(self, tmp_path: Path) -> None:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "deriv-books.jsonl").write_text("not json\n")
        env = {**os.environ, "PENPAY_SANDBOX_STATE_DIR": str(tmp_path / "state")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "penpay.sandbox.main",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 1
        last = stderr.decode().strip().splitlines()[-1]
        assert last.startswith("penpay-sandbox: cannot read its saved state: ")
        assert "deriv-books.jsonl:1:" in last and "delete the file" in last


class TestDarajaAcrossRestarts:
    async def test_a_killed_sandbox_delivers_the_stk_callback_it_owed_after_a_restart(self, tmp_path: Path) -> None:
        from penpay.sandbox.daraja_wire import stk_password  # noqa: PLC0415
        from penpay.settings import Settings  # noqa: PLC0415
        from tests.contract.daraja_fixtures import callback_receiver  # noqa: PLC0415

        settings = Settings(_env_file=None)  # type: ignore[call-arg] - what the sandbox process reads (no .env there)
        state = {"PENPAY_SANDBOX_STATE_DIR": str(tmp_path / "state")}
        async with callback_receiver() as receiver:
            first = await start_sandbox(tmp_path, **state, PENPAY_SANDBOX_CALLBACK_DELAY_MS="60000")
            try:
                daraja = f"http://127.0.0.1:{first.ports['PENPAY_SANDBOX_DARAJA_PORT']}"
                async with httpx.AsyncClient(base_url=daraja, timeout=5) as http:
                    oauth = await http.get(
                        "/oauth/v1/generate",
                        params={"grant_type": "client_credentials"},
                        auth=(settings.daraja_consumer_key, settings.daraja_consumer_secret.get_secret_value()),
                    )
                    ts = "20261207120000"
                    shortcode = settings.daraja_shortcode
                    push = {
                        "BusinessShortCode": shortcode,
                        "Password": stk_password(shortcode, settings.daraja_passkey.get_secret_value(), ts),
                        "Timestamp": ts,
                        "TransactionType": "CustomerPayBillOnline",
                        "Amount": 100,
                        "PartyA": "254712345678",
                        "PartyB": shortcode,
                        "PhoneNumber": "254712345678",
                        "CallBackURL": receiver.url("/hooks/stk"),
                        "AccountReference": "PENPAY",
                        "TransactionDesc": "Deposit",
                    }
                    headers = {"Authorization": f"Bearer {oauth.json()['access_token']}"}
                    accepted = (await http.post("/mpesa/stkpush/v1/processrequest", json=push, headers=headers)).json()
                assert accepted["ResponseCode"] == "0", accepted
            finally:
                first.process.kill()  # SIGKILL, a minute before the customer would have answered the prompt
                await first.process.wait()
            assert receiver.deliveries == []

            second = await start_sandbox(tmp_path, **state, PENPAY_SANDBOX_CALLBACK_DELAY_MS="0")
            try:
                [delivery] = await receiver.wait_for("/hooks/stk", timeout_s=10)
            finally:
                code, logs = await second.stop(signal.SIGTERM)
        callback = delivery.json()["Body"]["stkCallback"]
        assert (callback["CheckoutRequestID"], callback["ResultCode"]) == (accepted["CheckoutRequestID"], 0)
        assert code == 0
        [resumed] = [line for line in logs if line["event"] == "sandbox_daraja_state"]
        assert (resumed["replayed"], resumed["owed"]) == (1, 1)
