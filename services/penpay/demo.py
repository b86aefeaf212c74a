"""``penpay demo``: one deposit and one withdrawal through the RUNNING sandbox platform, over the public API.

It is a client like any other: it mints tokens with the configured JWT key (``penpay token``'s minter), calls the API
(ARCHITECTURE §8) with ``Idempotency-Key`` headers, polls ``GET /transactions/{id}`` and prints every status as it
changes, reads the withdrawal verification code that the Deriv simulator "e-mailed" from the sandbox's control API,
and ends with the balances: the ledger's (``GET /admin/ledger/balances``, admin token) and the sandbox's Deriv
accounts. Exit 0 when both transactions completed; 1 when the platform is not running or a step failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

import httpx

from penpay.settings import Settings
from penpay_domain.money import Currency, Money
from penpay_domain.transaction import TERMINAL, Status

Json = dict[str, Any]
SANDBOX_AGENT_LOGINID = "CR900000"
_STOP = TERMINAL | {Status.NEEDS_REVIEW}
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - listen-anywhere addresses, dialled on loopback


class Minter(Protocol):
    """How ``penpay token`` mints a JWT with the configured key (passed in by the CLI)."""

    def __call__(self, settings: Settings, *, sub: str, role: str | None = None, ttl_s: int = 3600) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPlan:
    user: str = "demo-user"
    msisdn: str = "254712345678"  # an ordinary sandbox phone: STK Push and B2C both succeed (docs/sandbox.md)
    loginid: str = "CR1234567"  # an ordinary sandbox Deriv account, funded with 10,000.00 USD
    amount_kes: int = 1000
    amount_usd: str = "5.00"
    timeout_s: float = 60.0
    poll_s: float = 0.25


class PlatformDown(Exception):
    """The API or the sandbox does not answer."""


class StepFailed(Exception):
    """A call answered, but not as the flow needs."""


def _http_base(host: str, port: int) -> str:
    host = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def api_url(settings: Settings) -> str:
    return _http_base(settings.api_host, settings.api_port)


def sandbox_control_url(settings: Settings) -> str:
    """The sandbox control HTTP listens on the Daraja simulator's host, at ``PENPAY_SANDBOX_HTTP_PORT``."""
    return _http_base(urlsplit(settings.daraja_base_url).hostname or "127.0.0.1", settings.sandbox_http_port)


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("code", "title", "detail") if body.get(key)]
        if parts:
            return ": ".join(parts)
    return json.dumps(body)[:300]


class Demo:
    def __init__(
        self,
        settings: Settings,
        api: httpx.AsyncClient,
        sandbox: httpx.AsyncClient,
        plan: DemoPlan,
        out: TextIO,
        *,
        mint: Minter,
    ) -> None:
        self._api = api
        self._sandbox = sandbox
        self._plan = plan
        self._out = out
        self._user = {"Authorization": f"Bearer {mint(settings, sub=plan.user, ttl_s=3600)}"}
        self._admin = {"Authorization": f"Bearer {mint(settings, sub='demo-admin', role='admin', ttl_s=3600)}"}

    def say(self, line: str) -> None:
        self._out.write(f"demo | {line}\n")
        self._out.flush()

    # -------------------------------------------------------------------------------------------- HTTP
    async def _call(
        self, client: httpx.AsyncClient, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        try:
            return await client.request(method, path, headers=headers, **kw)
        except httpx.TimeoutException as exc:
            raise PlatformDown(f"{method} {client.base_url}{path} timed out") from exc
        except httpx.TransportError as exc:
            raise PlatformDown(f"no answer from {client.base_url}{path} ({exc!r})") from exc

    async def _api_json(self, method: str, path: str, *, admin: bool = False, body: Json | None = None) -> Any:
        headers = dict(self._admin if admin else self._user)
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        response = await self._call(self._api, method, path, headers=headers, json=body)
        if not response.is_success:
            raise StepFailed(f"{method} {path} answered {response.status_code}: {_problem(response)}")
        return response.json()

    async def _sandbox_json(self, path: str) -> Json | None:
        response = await self._call(self._sandbox, "GET", path)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise StepFailed(f"sandbox GET {path} answered {response.status_code}: {_problem(response)}")
        body: Json = response.json()
        return body

    # -------------------------------------------------------------------------------------------- steps
    async def check_platform(self) -> None:
        for name, client in (("API", self._api), ("sandbox control API", self._sandbox)):
            response = await self._call(client, "GET", "/healthz")
            if not response.is_success:
                raise PlatformDown(f"the {name} at {client.base_url} answers /healthz with {response.status_code}")
        self.say(f"platform: API {self._api.base_url}, sandbox control {self._sandbox.base_url}")

    async def deriv_balance(self, loginid: str) -> str:
        account = await self._sandbox_json(f"/deriv/accounts/{loginid}")
        if account is None:
            raise StepFailed(f"the sandbox has no Deriv account {loginid}")
        return f"{account['balance']} {account['currency']}"

    async def follow(self, txn: Json) -> Json:
        """Poll the transaction, printing each status as it changes, until it stops or the deadline passes."""
        started = time.monotonic()
        deadline = started + self._plan.timeout_s
        status = txn["status"]
        self.say(f"  {status:<17} {0.0:5.1f}s")
        while status not in _STOP:
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"transaction {txn['id']} still {status} after {self._plan.timeout_s:.0f}s: are the worker and "
                    "the gateway running? (make run starts them)"
                )
            await asyncio.sleep(self._plan.poll_s)
            txn = await self._api_json("GET", f"/transactions/{txn['id']}")
            if txn["status"] != status:
                status = txn["status"]
                details = [
                    f"{key} {txn[key]}"
                    for key in ("mpesa_receipt", "deriv_transaction_id", "failure_reason")
                    if txn.get(key)
                ]
                self.say(f"  {status:<17} {time.monotonic() - started:5.1f}s  {', '.join(details)}".rstrip())
        return txn

    async def deposit(self) -> Json:
        plan = self._plan
        self.say(f"deposit: {plan.amount_kes} KES from {plan.msisdn} to Deriv {plan.loginid} (POST /deposit)")
        txn = await self._api_json(
            "POST",
            "/deposit",
            body={"amount_kes": plan.amount_kes, "msisdn": plan.msisdn, "deriv_loginid": plan.loginid},
        )
        self.say(
            f"  transaction {txn['id']}: {txn['amount_kes']} KES -> {txn['amount_usd']} USD "
            f"at {txn['fx_rate']} KES/USD, fee {txn['fee']} KES"
        )
        return await self.follow(txn)

    async def link(self) -> None:
        plan = self._plan
        token = f"sandbox-user-token-{plan.loginid}"
        await self._api_json("POST", "/deriv/link", body={"token": token})
        self.say(f"linked Deriv {plan.loginid} to {plan.user} (POST /deriv/link with its sandbox OAuth token)")

    async def verification_code(self) -> str:
        path = f"/deriv/verification-codes/{self._plan.loginid}"
        before = await self._sandbox_json(path)
        await self._api_json("POST", "/withdraw/code", body={"deriv_loginid": self._plan.loginid})
        self.say("requested a withdrawal verification code (POST /withdraw/code); Deriv e-mails it to the user")
        deadline = time.monotonic() + self._plan.timeout_s
        while True:
            current = await self._sandbox_json(path)
            if current is not None and (before is None or current["code"] != before["code"]):
                code = str(current["code"])
                self.say(f"  the sandbox's Deriv e-mail holds the code {code}")
                return code
            if time.monotonic() > deadline:
                raise StepFailed(f"no new verification code for {self._plan.loginid} in the sandbox after the request")
            await asyncio.sleep(self._plan.poll_s)

    async def withdraw(self, code: str) -> Json:
        plan = self._plan
        self.say(f"withdrawal: {plan.amount_usd} USD from Deriv {plan.loginid} to {plan.msisdn} (POST /withdraw)")
        txn = await self._api_json(
            "POST",
            "/withdraw",
            body={
                "amount_usd": plan.amount_usd,
                "msisdn": plan.msisdn,
                "deriv_loginid": plan.loginid,
                "verification_code": code,
            },
        )
        self.say(
            f"  transaction {txn['id']}: {txn['amount_usd']} USD -> {txn['amount_kes']} KES "
            f"at {txn['fx_rate']} KES/USD, fee {txn['fee']} KES"
        )
        return await self.follow(txn)

    async def balances(self, user_before: str, agent_before: str) -> None:
        self.say("balances")
        self.say(
            f"  Deriv {self._plan.loginid} (sandbox): {user_before} -> {await self.deriv_balance(self._plan.loginid)}"
        )
        agent_after = await self.deriv_balance(SANDBOX_AGENT_LOGINID)
        self.say(f"  Deriv agent {SANDBOX_AGENT_LOGINID} (sandbox): {agent_before} -> {agent_after}")
        self.say("  ledger (GET /admin/ledger/balances):")
        for line in ledger_lines(await self._api_json("GET", "/admin/ledger/balances", admin=True)):
            self.say(f"    {line}")
        check = await self._api_json("GET", "/admin/ledger/check", admin=True)
        ok = isinstance(check, dict) and check.get("ok") is True
        self.say(f"  ledger check (GET /admin/ledger/check): {'ok' if ok else json.dumps(check)}")
        reconciled = await self._api_json("GET", "/admin/ledger/deriv-agent", admin=True)
        verdict = agent_balance_verdict(reconciled)
        self.say(f"  Deriv agent balance against deriv:agent (GET /admin/ledger/deriv-agent): {verdict}")

    async def run(self) -> bool:
        await self.check_platform()
        user_before = await self.deriv_balance(self._plan.loginid)
        agent_before = await self.deriv_balance(SANDBOX_AGENT_LOGINID)
        self.say(f"user {self._plan.user}: phone {self._plan.msisdn}, Deriv {self._plan.loginid} ({user_before})")
        deposit = await self.deposit()
        await self.link()
        withdrawal = await self.withdraw(await self.verification_code())
        await self.balances(user_before, agent_before)
        outcomes = {"deposit": deposit["status"], "withdrawal": withdrawal["status"]}
        self.say(", ".join(f"{kind} {status}" for kind, status in outcomes.items()))
        return all(status == Status.COMPLETED for status in outcomes.values())


def agent_balance_verdict(payload: Any) -> str:
    """The reconciliation in words: "explained", or the drift and its likeliest cause on a development machine."""
    if not isinstance(payload, dict) or not isinstance(payload.get("drift_cents"), int):
        return json.dumps(payload)
    if payload.get("ok") is True:
        return "explained"
    drift = Money(payload["drift_cents"], Currency.USD)
    return (
        f"DRIFT of {'+' if drift.minor > 0 else ''}{drift} (Deriv {payload.get('deriv_cents')} cents, the ledger "
        f"explains {payload.get('lowest_cents')}..{payload.get('highest_cents')}); with the sandbox this means its "
        "Deriv books (PENPAY_SANDBOX_STATE_DIR) and the database are not of one history: one was reset without "
        "the other, or the sandbox kept its books in memory (the setting empty) and was restarted"
    )


def ledger_lines(payload: Any) -> list[str]:
    """The admin balances as aligned rows (``account currency balance [available]``), whatever the list's wrapper."""
    rows = payload.get("accounts", payload.get("items")) if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return [json.dumps(payload)]
    lines = []
    for row in rows:
        account = row.get("account", row.get("code", "?"))
        balance = row.get("balance", "?")
        available = row.get("available")
        extra = f"  (available {available})" if available is not None and available != balance else ""
        lines.append(f"{account:<22} {row.get('currency', ''):<4} {balance:>16}{extra}")
    return lines


async def run_demo(
    settings: Settings, plan: DemoPlan, *, mint: Minter, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    if settings.is_production:
        err.write("penpay demo: the demo drives the sandbox; refusing with PENPAY_ENV=production\n")
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo prints its own steps; not a line per poll
    timeout = httpx.Timeout(10.0, connect=3.0)
    async with (
        httpx.AsyncClient(base_url=api_url(settings), timeout=timeout) as api,
        httpx.AsyncClient(base_url=sandbox_control_url(settings), timeout=timeout) as sandbox,
    ):
        demo = Demo(settings, api, sandbox, plan, out, mint=mint)
        try:
            completed = await demo.run()
        except PlatformDown as exc:
            err.write(f"penpay demo: the platform is not running: {exc}. Start it with `make run` (another terminal)\n")
            return 1
        except StepFailed as exc:
            err.write(f"penpay demo: {exc}\n")
            return 1
    return 0 if completed else 1
