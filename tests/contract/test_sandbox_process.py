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


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    names = ("PENPAY_SANDBOX_DARAJA_PORT", "PENPAY_SANDBOX_DERIV_PORT", "PENPAY_SMTP_PORT", "PENPAY_SANDBOX_HTTP_PORT")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PENPAY_SANDBOX_CALLBACK_DELAY_MS": "20"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "penpay.sandbox.main",
        cwd=tmp_path,  # no stray .env
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
    yield running
    if process.returncode is None:
        process.kill()
        await process.wait()


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
