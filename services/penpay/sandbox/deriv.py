"""A protocol-faithful Deriv WebSocket API simulator (``/websockets/v3``), for tests and ``make run``.

It speaks Deriv's envelope (``echo_req``, ``msg_type``, ``req_id``, ``passthrough``; errors as
``{"error": {"code", "message"}}`` without a result field), answers many in-flight requests per socket in
any order, keeps subscriptions per socket, and keeps balances (integer cents) and statements consistent
across sockets. It shares no code with PenPay's gateway: a double that shared the client's code would agree
with the client's bugs.

Faults for tests: :meth:`DerivSimulator.inject_rate_limit`, :meth:`DerivSimulator.drop_connections`,
:meth:`DerivSimulator.drop_on_next`; the test identities of docs/sandbox.md behave as documented there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from penpay.coalescing import coalescing
from penpay.sandbox.deriv_accounts import (
    TRANSFER_DROPPED,
    TRANSFER_REJECTED,
    WITHDRAW_DROPPED,
    WITHDRAW_REJECTED,
    Account,
    DerivApiError,
    DerivBooks,
    StatementEntry,
    cents_from_wire,
    cents_to_wire,
    statement_row,
)
from penpay.sandbox.deriv_control import create_deriv_control_router
from penpay.sandbox.json_text import compact_json
from penpay.sandbox.listening import LISTEN_BACKLOG

__all__ = ["DerivSimulator", "create_deriv_control_router", "encode_json"]

PATH = "/websockets/v3"
NOT_SHOWN = "<not shown>"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VERIFY_TYPES = {"account_opening", "reset_password", "paymentagent_withdraw", "payment_withdraw"}
# Calls that never count against the injected rate limit, so a client can always re-authorize and keep alive.
_UNLIMITED = {"ping", "authorize", "forget", "forget_all"}

Json = dict[str, Any]


class _DropConnectionError(Exception):
    """Close the socket without answering (after or instead of executing the call)."""


@dataclass(slots=True)
class _Subscription:
    loginid: str
    echo_req: Json
    req_id: int | None
    passthrough: Any


@dataclass(slots=True, eq=False)
class _Session:
    ws: ServerConnection
    accounts: dict[str, tuple[Account, tuple[str, ...]]] = field(default_factory=dict)
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def acting(self, request: Json) -> tuple[Account, tuple[str, ...]]:
        if not self.accounts:
            raise DerivApiError("AuthorizationRequired", "Please log in.")
        loginid = request.get("loginid")
        if loginid is None:
            if len(self.accounts) > 1:
                raise DerivApiError(
                    "InputValidationFailed", "Input validation failed: loginid (required with several tokens)"
                )
            return next(iter(self.accounts.values()))
        if loginid not in self.accounts:
            raise DerivApiError("InvalidLoginid", f"Login id {loginid} is not authorised on this connection.")
        return self.accounts[loginid]


def encode_json(value: object) -> str:
    """JSON with Decimals written as exact numbers (``12.50``), never through float."""
    return compact_json(value, _deriv_scalar)


def _deriv_scalar(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value)  # a float, a str or int subclass: as json.dumps writes it


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class CoalescingServerConnection(ServerConnection):
    """A socket whose frames written in one event-loop step leave in one write: a batch of requests' answers and
    balance updates (``penpay.coalescing``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(coalescing(transport))


class DerivSimulator:
    """The simulated Deriv API; one instance holds the books every socket sees."""

    def __init__(
        self,
        *,
        agent_token: str,
        agent_loginid: str = "CR900000",
        agent_balance_cents: int = 100_000_000,
        response_delay_ms: tuple[int, int] = (0, 0),
    ) -> None:
        self.books = DerivBooks(
            agent_token=agent_token, agent_loginid=agent_loginid, agent_balance_cents=agent_balance_cents
        )
        self.response_delay_ms = response_delay_ms
        self.host = "127.0.0.1"
        self.port = 0
        self.requests_seen = 0
        self._random = random.Random()  # noqa: S311 - simulated latency, not security
        self._sessions: set[_Session] = set()
        self.peak_connection_count = 0  # the most sockets open at once (tests may reset it)
        self._server: Server | None = None
        self._rate_limited_calls = 0
        self._drop_on_next: set[str] = set()
        self._calls: dict[str, Callable[[_Session, Json], Awaitable[Json]]] = {
            "authorize": self._authorize,
            "balance": self._balance,
            "forget": self._forget,
            "forget_all": self._forget_all,
            "ping": self._ping,
            "paymentagent_transfer": self._paymentagent_transfer,
            "paymentagent_withdraw": self._paymentagent_withdraw,
            "verify_email": self._verify_email,
            "statement": self._statement,
        }

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> None:
        self._server = await serve(
            self._serve_socket,
            host,
            port,
            process_request=self._check_path,
            ping_interval=None,
            create_connection=CoalescingServerConnection,
            backlog=LISTEN_BACKLOG,
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1] if port == 0 else port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    # ------------------------------------------------------------------ inspection and faults
    def balance_cents(self, loginid: str) -> int:
        return self.books.account(loginid).balance_cents

    def statement(self, loginid: str) -> list[StatementEntry]:
        return list(self.books.account(loginid).statement)

    def verification_code(self, loginid: str) -> str | None:
        return self.books.verification_codes.get(loginid)

    def fund(self, loginid: str, cents: int) -> None:
        account = self.books.fund(loginid, cents)
        self._notify_balance(account)

    def inject_rate_limit(self, calls: int) -> None:
        """The next ``calls`` requests (other than ping/authorize/forget) get ``RateLimit`` and do nothing."""
        self._rate_limited_calls = calls

    def drop_on_next(self, call: str) -> None:
        """The next request named ``call`` closes its socket before anything is executed."""
        self._drop_on_next.add(call)

    async def drop_connections(self) -> None:
        """Abort every open socket (no close handshake), like a network failure."""
        for session in list(self._sessions):
            session.ws.transport.abort()
        await asyncio.sleep(0)

    def clear_faults(self) -> None:
        self._rate_limited_calls = 0
        self._drop_on_next.clear()

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    @property
    def subscription_count(self) -> int:
        return sum(len(s.subscriptions) for s in self._sessions)

    # ------------------------------------------------------------------ the socket
    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        # Real clients append ?app_id=…&l=EN&brand=deriv; only the path matters here.
        if urlsplit(request.path).path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _serve_socket(self, ws: ServerConnection) -> None:
        session = _Session(ws=ws)
        self._sessions.add(session)
        self.peak_connection_count = max(self.peak_connection_count, len(self._sessions))
        try:
            async for raw in ws:
                task = asyncio.create_task(self._answer(session, raw))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            # Subscriptions and authorization belong to the socket: they die with it.
            self._sessions.discard(session)
            session.subscriptions.clear()
            for task in list(session.tasks):
                task.cancel()

    async def _answer(self, session: _Session, raw: str | bytes) -> None:
        try:
            request = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        except ValueError:
            await self._send(session, {"error": _error("InputValidationFailed", "Invalid JSON"), "msg_type": "error"})
            return
        if not isinstance(request, dict):
            await self._send(
                session, {"error": _error("InputValidationFailed", "Expected an object"), "msg_type": "error"}
            )
            return
        self.requests_seen += 1
        lo, hi = self.response_delay_ms
        if hi > 0:
            await asyncio.sleep(self._random.uniform(lo, hi) / 1000)
        call = next((name for name in request if name in self._calls), None)
        envelope: Json = {"echo_req": _masked(request), "msg_type": call or "error"}
        if "req_id" in request:
            envelope["req_id"] = request["req_id"]
        if "passthrough" in request:
            envelope["passthrough"] = request["passthrough"]
        try:
            if call is None:
                raise DerivApiError("UnrecognisedRequest", "Unrecognised request.")
            if call in self._drop_on_next:
                self._drop_on_next.discard(call)
                raise _DropConnectionError
            if call not in _UNLIMITED and self._rate_limited_calls > 0:
                self._rate_limited_calls -= 1
                raise DerivApiError("RateLimit", "You have reached the rate limit for " + call + ".")
            body = await self._calls[call](session, request)
        except DerivApiError as exc:
            await self._send(session, {"error": _error(exc.code, exc.message), **envelope})
            return
        except _DropConnectionError:
            session.ws.transport.abort()
            return
        await self._send(session, {**body, **envelope})

    async def _send(self, session: _Session, message: Json) -> None:
        with contextlib.suppress(ConnectionClosed):
            async with session.send_lock:
                await session.ws.send(encode_json(message))

    # ------------------------------------------------------------------ calls
    async def _ping(self, session: _Session, request: Json) -> Json:
        return {"ping": "pong"}

    async def _authorize(self, session: _Session, request: Json) -> Json:
        token = request.get("authorize")
        extra = request.get("tokens", [])
        if not isinstance(token, str) or not isinstance(extra, list):
            raise DerivApiError("InputValidationFailed", "Input validation failed: authorize")
        main, scopes = self.books.authorize(token)
        granted = {main.loginid: (main, scopes)}
        for other in extra:
            if not isinstance(other, str):
                raise DerivApiError("InputValidationFailed", "Input validation failed: tokens")
            account, other_scopes = self.books.authorize(other)
            granted[account.loginid] = (account, other_scopes)
        session.accounts = granted
        return {
            "authorize": {
                "account_list": [
                    {
                        "loginid": acc.loginid,
                        "currency": acc.currency,
                        "is_virtual": int(acc.is_virtual),
                        "is_disabled": 0,
                        "landing_company_name": "svg",
                        "account_type": "binary",
                    }
                    for acc, _ in granted.values()
                ],
                "balance": cents_to_wire(main.balance_cents),
                "country": "ke",
                "currency": main.currency,
                "email": main.email,
                "fullname": main.fullname,
                "is_virtual": int(main.is_virtual),
                "landing_company_fullname": "Deriv (SVG) LLC",
                "landing_company_name": "svg",
                "loginid": main.loginid,
                "preferred_language": "EN",
                "scopes": list(scopes),
                "user_id": abs(hash(main.loginid)) % 10_000_000,
            }
        }

    async def _balance(self, session: _Session, request: Json) -> Json:
        account, _ = session.acting(request)
        target = request.get("account", "current")
        if target not in ("current", account.loginid):
            raise DerivApiError("PermissionDenied", "Permission denied.")
        result: Json = {
            "balance": cents_to_wire(account.balance_cents),
            "currency": account.currency,
            "loginid": account.loginid,
        }
        if request.get("subscribe") != 1:
            return {"balance": result}
        if any(sub.loginid == account.loginid for sub in session.subscriptions.values()):
            raise DerivApiError("AlreadySubscribed", "You are already subscribed to balance.")
        sub_id = str(uuid.uuid4())
        session.subscriptions[sub_id] = _Subscription(
            loginid=account.loginid,
            echo_req=_masked(request),
            req_id=request.get("req_id"),
            passthrough=request.get("passthrough"),
        )
        return {"balance": {**result, "id": sub_id}, "subscription": {"id": sub_id}}

    async def _forget(self, session: _Session, request: Json) -> Json:
        return {"forget": 1 if session.subscriptions.pop(str(request.get("forget")), None) else 0}

    async def _forget_all(self, session: _Session, request: Json) -> Json:
        kinds = request.get("forget_all")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(kinds, list) or not kinds:
            raise DerivApiError("InputValidationFailed", "Input validation failed: forget_all")
        forgotten = list(session.subscriptions) if "balance" in kinds else []
        for sub_id in forgotten:
            del session.subscriptions[sub_id]
        return {"forget_all": forgotten}

    async def _paymentagent_transfer(self, session: _Session, request: Json) -> Json:
        agent, scopes = session.acting(request)
        if "payments" not in scopes:
            raise DerivApiError("PermissionDenied", "Permission denied, requires payments scope(s).")
        if not agent.is_agent:
            raise DerivApiError("PaymentAgentTransferError", "You are not authorized for transfers via payment agents.")
        cents = cents_from_wire(request.get("amount"))
        if request.get("currency") != agent.currency:
            raise DerivApiError("PaymentAgentTransferError", f"You can only transfer {agent.currency}.")
        transfer_to = request.get("transfer_to")
        description = request.get("description", "")
        if not isinstance(transfer_to, str) or not isinstance(description, str):
            raise DerivApiError("InputValidationFailed", "Input validation failed: transfer_to")
        try:
            client = self.books.account(transfer_to)
        except KeyError:
            raise DerivApiError("PaymentAgentTransferError", f"Login ID ({transfer_to}) does not exist.") from None
        if client.loginid == agent.loginid:
            raise DerivApiError("PaymentAgentTransferError", "Payment agent transfers are not allowed to yourself.")
        if client.loginid == TRANSFER_REJECTED:
            raise DerivApiError(
                "PaymentAgentTransferError",
                "Payment agent transfers are not allowed for the specified accounts.",
            )
        if client.currency != agent.currency:
            raise DerivApiError("PaymentAgentTransferError", "You cannot transfer to an account in another currency.")
        if agent.balance_cents < cents:
            raise DerivApiError(
                "PaymentAgentTransferError", "Your account balance is insufficient for this transaction."
            )
        if request.get("dry_run") == 1:
            return {
                "paymentagent_transfer": 2,
                "client_to_full_name": client.fullname,
                "client_to_loginid": client.loginid,
            }
        moved = self.books.move(
            debit=agent, credit=client, cents=cents, description=description, kind="Payment agent transfer"
        )
        self._notify_balance(agent, client)
        if client.loginid == TRANSFER_DROPPED:
            raise _DropConnectionError
        return {
            "paymentagent_transfer": 1,
            "client_to_full_name": client.fullname,
            "client_to_loginid": client.loginid,
            "transaction_id": moved.debit_transaction_id,
        }

    async def _paymentagent_withdraw(self, session: _Session, request: Json) -> Json:
        client, scopes = session.acting(request)
        if "payments" not in scopes:
            raise DerivApiError("PermissionDenied", "Permission denied, requires payments scope(s).")
        cents = cents_from_wire(request.get("amount"))
        if request.get("currency") != client.currency:
            raise DerivApiError("PaymentAgentWithdrawError", f"You can only withdraw {client.currency}.")
        description = request.get("description", "")
        if not isinstance(description, str):
            raise DerivApiError("InputValidationFailed", "Input validation failed: description")
        agent = self.books.agent
        if request.get("paymentagent_loginid") != agent.loginid or client.is_agent:
            raise DerivApiError("PaymentAgentWithdrawError", "Please enter a valid payment agent ID.")
        code = request.get("verification_code")
        if self.books.verification_codes.get(client.loginid) != code:
            raise DerivApiError("InvalidToken", "Your token has expired or is invalid.")
        if client.loginid == WITHDRAW_REJECTED:
            raise DerivApiError("PaymentAgentWithdrawError", "You are not allowed to withdraw via payment agent.")
        if client.balance_cents < cents:
            raise DerivApiError(
                "PaymentAgentWithdrawError", "Your account balance is insufficient for this transaction."
            )
        if request.get("dry_run") == 1:
            return {"paymentagent_withdraw": 2, "paymentagent_name": agent.fullname}
        self.books.consume_verification_code(client.loginid, code)
        moved = self.books.move(
            debit=client, credit=agent, cents=cents, description=description, kind="Payment agent withdrawal"
        )
        self._notify_balance(agent, client)
        if client.loginid == WITHDRAW_DROPPED:
            raise _DropConnectionError
        return {
            "paymentagent_withdraw": 1,
            "paymentagent_name": agent.fullname,
            "transaction_id": moved.debit_transaction_id,
        }

    async def _verify_email(self, session: _Session, request: Json) -> Json:
        email = request.get("verify_email")
        if not isinstance(email, str) or not _EMAIL_RE.match(email) or request.get("type") not in _VERIFY_TYPES:
            raise DerivApiError("InputValidationFailed", "Input validation failed: verify_email")
        # Deriv answers 1 whether or not the address is known (no enumeration); the code goes by e-mail.
        account = self.books.account_by_email(email.lower())
        if account is not None and request.get("type") == "paymentagent_withdraw":
            self.books.issue_verification_code(account.loginid)
        return {"verify_email": 1}

    async def _statement(self, session: _Session, request: Json) -> Json:
        account, _ = session.acting(request)
        limit, offset = request.get("limit", 100), request.get("offset", 0)
        if not isinstance(limit, int) or not isinstance(offset, int) or not 0 < limit <= 999 or offset < 0:
            raise DerivApiError("InputValidationFailed", "Input validation failed: limit/offset")
        date_from, date_to = request.get("date_from", 0), request.get("date_to")
        action_type = request.get("action_type")
        entries = [
            e
            for e in reversed(account.statement)
            if e.transaction_time >= date_from
            and (date_to is None or e.transaction_time <= date_to)
            and (action_type is None or e.action_type == action_type)
        ][offset : offset + limit]
        transactions = [statement_row(e, with_description=request.get("description") == 1) for e in entries]
        return {"statement": {"count": len(transactions), "transactions": transactions}}

    # ------------------------------------------------------------------ streams
    def _notify_balance(self, *accounts: Account) -> None:
        changed = {a.loginid: a for a in accounts}
        for session in list(self._sessions):
            for sub_id, sub in session.subscriptions.items():
                account = changed.get(sub.loginid)
                if account is None:
                    continue
                message: Json = {
                    "balance": {
                        "balance": cents_to_wire(account.balance_cents),
                        "currency": account.currency,
                        "id": sub_id,
                        "loginid": account.loginid,
                    },
                    "echo_req": sub.echo_req,
                    "msg_type": "balance",
                    "subscription": {"id": sub_id},
                }
                if sub.req_id is not None:
                    message["req_id"] = sub.req_id
                if sub.passthrough is not None:
                    message["passthrough"] = sub.passthrough
                task = asyncio.create_task(self._send(session, message))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)


def _error(code: str, message: str) -> Json:
    return {"code": code, "message": message}


def _masked(request: Json) -> Json:
    """Deriv never echoes tokens back."""
    echo = dict(request)
    if "authorize" in echo:
        echo["authorize"] = NOT_SHOWN
        if isinstance(echo.get("tokens"), list):
            echo["tokens"] = [NOT_SHOWN for _ in echo["tokens"]]
    return echo
