"""A protocol-faithful Daraja simulator: OAuth, STK Push and Query, B2C v3 and Transaction Status.

Real paths, payload shapes and error envelopes (reference/daraja.md), the test identities of docs/sandbox.md, and
asynchronous callbacks POSTed to the URLs given in each request after ``callback_delay_ms``. Every request and
every callback is kept in a journal that the control API serves, so tests and operators can see exactly what was
sent, e.g. that a client did not resend a payout after a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from penpay.logging import get_logger
from penpay.sandbox import daraja_results as results
from penpay.sandbox import daraja_wire as wire
from penpay.sandbox.daraja_crypto import SandboxCertificate
from penpay.sandbox.identities import STK_OUTCOMES, B2cBehaviour, b2c_behaviour, stk_behaviour
from penpay.settings import Settings

log = get_logger(__name__)

TOKEN_TTL_S = 3600
JSON = "application/json"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, object]]]
Endpoint = Callable[[Request], Awaitable[Response]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class DarajaApp:
    """The simulator's HTTP surface, a plain ASGI app: its few paths by exact match, one method each (``HEAD`` too
    where that is ``GET``), and Daraja's own 404/405 bodies for anything else. Nothing of a framework's routing,
    dependency solving or middleware: under load those were a third of the sandbox's CPU, which the platform it
    simulates for shares in ``make bench`` (docs/performance.md, round 10). An endpoint that raises is answered
    500 ``Internal Server Error``, as Starlette answers it, and logged."""

    def __init__(
        self, routes: dict[str, tuple[str, Endpoint]], routing_error: Callable[[Request, int], Response]
    ) -> None:
        self._routes = routes
        self._routing_error = routing_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off (sandbox.control.AppServer); no websockets here
            return
        request = Request(scope, receive)
        route = self._routes.get(scope["path"])
        try:
            if route is None:
                response = self._routing_error(request, 404)
            elif scope["method"] != route[0] and not (route[0] == "GET" and scope["method"] == "HEAD"):
                response = self._routing_error(request, 405)
            else:
                response = await route[1](request)
        except Exception:
            log.exception("daraja_endpoint_failed", method=scope["method"], path=scope["path"])
            response = PlainTextResponse("Internal Server Error", status_code=500)
        await response(scope, receive, send)


class DarajaSimulator:
    """The simulator's state and its ASGI app (:attr:`app`); serve it with any ASGI server."""

    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        b2c_shortcode: str,
        initiator_name: str,
        initiator_password: str,
        callback_delay_ms: int = 300,
        certificate: SandboxCertificate | None = None,
        callback_timeout_s: float = 10.0,
    ) -> None:
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._shortcode = shortcode
        self._passkey = passkey
        self._b2c_shortcode = b2c_shortcode
        self._initiator_name = initiator_name
        self._initiator_password = initiator_password
        self.callback_delay_s = callback_delay_ms / 1000
        # A fault to inject: product APIs execute the request, then wait this long before answering (a slow or
        # lost answer, as a client with a short read timeout sees it).
        self.response_delay_s = 0.0
        self.certificate = certificate or SandboxCertificate()
        # no pool timeout: Daraja's delivery is not limited by a local connection pool, so a callback waits for a
        # free connection instead of being dropped unsent under load (a slow answer still times out, as with Daraja)
        self._callback_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=5.0, sock_read=callback_timeout_s
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self._sessions: dict[str, results.StkSession] = {}
        self._prompt_until: dict[str, float] = {}  # phone -> when its latest prompt closes (monotonic seconds)
        self._payouts: dict[str, results.Payout] = {}
        self._balances_cents = {"utility": 5_000_000_000, "working": 119_937_100, "charges": -198_000}
        self._journal: list[dict[str, object]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # the state kept across restarts (``journal``): each change is handed to the recorder before it is answered
        self.recorder: Callable[[dict[str, Any]], None] | None = None
        self._owed_stk: dict[str, int] = {}  # checkout id -> callbacks still to deliver (replayed, not yet sent)
        self._owed_b2c: dict[str, B2cBehaviour] = {}  # originator id -> how its result was to be delivered
        self._http: aiohttp.ClientSession | None = None
        self.app = self._build_app()

    @classmethod
    def from_settings(cls, settings: Settings, certificate: SandboxCertificate | None = None) -> DarajaSimulator:
        return cls(
            consumer_key=settings.daraja_consumer_key,
            consumer_secret=settings.daraja_consumer_secret.get_secret_value(),
            shortcode=settings.daraja_shortcode,
            passkey=settings.daraja_passkey.get_secret_value(),
            b2c_shortcode=settings.daraja_b2c_shortcode,
            initiator_name=settings.daraja_initiator_name,
            initiator_password=settings.daraja_initiator_password.get_secret_value(),
            callback_delay_ms=settings.sandbox_callback_delay_ms,
            certificate=certificate,
        )

    # ---------------------------------------------------------------------------------- inspection and control

    def journal(self, *, kind: str | None = None, path: str | None = None) -> list[dict[str, object]]:
        """Requests received (``kind="request"``) and callbacks sent (``kind="callback"``), oldest first."""
        return [
            entry
            for entry in self._journal
            if (kind is None or entry["kind"] == kind) and (path is None or entry.get("path") == path)
        ]

    def clear_journal(self) -> None:
        self._journal.clear()

    def expire_tokens(self) -> None:
        """Make the current access token invalid, as expiry or a token issued elsewhere would."""
        self._token = None

    # ---------------------------------------------------------------------------------- kept across restarts

    def replay(self, record: dict[str, Any]) -> None:
        """One change of an earlier run, in order (``journal``): sessions and payouts as they were, and the
        callbacks and results it had not delivered yet, which :meth:`resume` sends."""
        op = record["op"]
        if op == "stk":
            session = results.session_from(record)
            self._sessions[session.checkout_request_id] = session
            self._owed_stk[session.checkout_request_id] = int(record["deliveries"])
        elif op == "stk_completed":
            session = self._sessions[record["checkout_request_id"]]
            session.completed_at = dt.datetime.fromisoformat(record["completed_at"])
            session.receipt = record["receipt"]
        elif op == "stk_delivered":
            self._owed_stk.pop(record["checkout_request_id"], None)
        elif op == "b2c":
            payout = results.payout_from(record)
            self._payouts[payout.originator_conversation_id] = payout
            if payout.paid:
                self._balances_cents = dict(payout.balances_cents)
            self._owed_b2c[payout.originator_conversation_id] = B2cBehaviour(record["behaviour"])
        elif op == "b2c_delivered":
            self._owed_b2c.pop(record["originator_conversation_id"], None)
        else:
            raise KeyError(f"unknown change {op!r}")

    def resume(self) -> int:
        """Deliver what the earlier run owed (callbacks of sessions, results of payouts), as it would have; returns
        how many are on their way. Call once the event loop runs."""
        owed = len(self._owed_stk) + len(self._owed_b2c)
        for checkout_id, deliveries in self._owed_stk.items():
            self._spawn(self._finish_stk(self._sessions[checkout_id], deliveries=deliveries))
        for originator_id, behaviour in self._owed_b2c.items():
            self._spawn(self._finish_b2c(self._payouts[originator_id], behaviour))
        self._owed_stk, self._owed_b2c = {}, {}
        return owed

    def _remember(self, op: str, **change: Any) -> None:
        if self.recorder is not None:
            self.recorder({"op": op, **change})

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until every scheduled callback has been delivered (or given up)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---------------------------------------------------------------------------------- HTTP surface

    def _build_app(self) -> DarajaApp:
        routes: dict[str, tuple[str, Endpoint]] = {"/oauth/v1/generate": ("GET", self._oauth)}
        products: dict[str, tuple[Handler, Callable[[], wire.DarajaError]]] = {
            "/mpesa/stkpush/v1/processrequest": (self._stk_push, _misleading_shortcode_error),
            "/mpesa/stkpushquery/v1/query": (self._stk_query, _misleading_shortcode_error),
            "/mpesa/b2c/v3/paymentrequest": (self._b2c, wire.invalid_payload),
            "/mpesa/transactionstatus/v1/query": (self._transaction_status, wire.invalid_payload),
        }
        for path, (handler, content_type_error) in products.items():
            routes[path] = ("POST", self._product_endpoint(handler, content_type_error))
        return DarajaApp(routes, self._routing_error)

    def _routing_error(self, request: Request, status: int) -> Response:
        if status == 405:
            error = wire.DarajaError(405, "405.001", "Method Not Allowed")
        else:
            error = wire.DarajaError(404, "404.001.01", "Resource not found")
        return self._reply(request, b"", error.status, error.body())

    def _reply(self, request: Request, raw: bytes, status: int, payload: dict[str, Any] | None) -> Response:
        text = json.dumps(payload) if payload is not None else ""
        self._record(
            kind="request",
            method=request.scope["method"],
            path=request.scope["path"],  # not request.url: it parses the Host header and builds a URL object
            status=status,
            request=raw.decode("utf-8", errors="replace"),
            response=text,
        )
        return Response(text, status_code=status, media_type=JSON if payload is not None else None)

    def _product_endpoint(self, handler: Handler, content_type_error: Callable[[], wire.DarajaError]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                self._check_bearer(request.headers.get("authorization", ""))
                if request.headers.get("content-type", "").split(";")[0].strip().lower() != JSON:
                    raise content_type_error()
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise wire.invalid_payload() from None
                if not isinstance(body, dict):
                    raise wire.invalid_payload()
                payload: dict[str, Any] = await handler(body)
                status = 200
            except wire.DarajaError as error:
                status, payload = error.status, error.body()
            reply = self._reply(request, raw, status, payload)
            if self.response_delay_s > 0:
                await asyncio.sleep(self.response_delay_s)
            return reply

        return endpoint

    async def _oauth(self, request: Request) -> Response:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not credentials:
            error = wire.bad_auth_type()
            return self._reply(request, b"", error.status, error.body())
        if request.query_params.get("grant_type") != "client_credentials":
            error = wire.bad_grant_type()
            return self._reply(request, b"", error.status, error.body())
        try:
            key, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key, secret = "", ""
        if not (
            hmac.compare_digest(key.encode(), self._consumer_key.encode())
            and hmac.compare_digest(secret.encode(), self._consumer_secret.encode())
        ):
            # The body Daraja returns for a wrong key/secret is undocumented (reference §1): an empty 400.
            return self._reply(request, b"", 400, None)
        self._token = wire.access_token()  # a new token invalidates the previous one (Daraja FAQ)
        self._token_expires = time.monotonic() + TOKEN_TTL_S
        return self._reply(request, b"", 200, {"access_token": self._token, "expires_in": str(TOKEN_TTL_S - 1)})

    def _check_bearer(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise wire.invalid_auth_header()
        current = self._token
        if current is None or time.monotonic() >= self._token_expires:
            raise wire.invalid_token()
        if not hmac.compare_digest(token.strip().encode(), current.encode()):
            raise wire.invalid_token()

    # ---------------------------------------------------------------------------------- STK Push and Query

    async def _stk_push(self, body: dict[str, Any]) -> dict[str, object]:
        business_shortcode = wire.shortcode(body, "BusinessShortCode")
        password = wire.require_str(body, "Password", max_len=512)
        timestamp = wire.timestamp(body)
        if body.get("TransactionType") not in wire.TRANSACTION_TYPES:
            raise wire.bad_request("TransactionType")
        amount = wire.amount(body, "Amount", wire.STK_MIN_KES, wire.STK_MAX_KES)
        payer = wire.msisdn(body, "PartyA")
        wire.shortcode(body, "PartyB")
        phone = wire.msisdn(body, "PhoneNumber")
        url = wire.callback_url(body, "CallBackURL")
        wire.require_str(body, "AccountReference", max_len=12)
        wire.optional_str(body, "TransactionDesc", max_len=13)
        self._check_merchant(business_shortcode, password, timestamp)
        now_mono = time.monotonic()
        if self._prompt_until.get(phone, 0.0) > now_mono:  # a prompt is still open on that phone
            raise wire.subscriber_locked()
        outcome = STK_OUTCOMES[stk_behaviour(phone)]
        now = dt.datetime.now(dt.UTC)
        session = results.StkSession(
            checkout_request_id=wire.checkout_request_id(now),
            merchant_request_id=wire.merchant_request_id(),
            phone=phone,
            payer=payer,
            amount_kes=amount,
            callback_url=url,
            result_code=outcome.result_code,
            result_desc=outcome.result_desc,
            created_at=now,
            done_at_monotonic=now_mono + self.callback_delay_s,
        )
        self._sessions[session.checkout_request_id] = session
        self._prompt_until[phone] = session.done_at_monotonic
        if self.recorder is not None:
            self._remember("stk", **results.as_record(session), deliveries=outcome.deliver_callbacks)
        self._spawn(self._finish_stk(session, deliveries=outcome.deliver_callbacks))
        return {
            "MerchantRequestID": session.merchant_request_id,
            "CheckoutRequestID": session.checkout_request_id,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        }

    def _check_merchant(self, business_shortcode: str, password: str, timestamp: str) -> None:
        if business_shortcode != self._shortcode:
            raise wire.merchant_unknown()
        expected = wire.stk_password(business_shortcode, self._passkey, timestamp)
        if not hmac.compare_digest(password.encode(), expected.encode()):
            raise wire.wrong_credentials()

    async def _finish_stk(self, session: results.StkSession, *, deliveries: int) -> None:
        if session.completed_at is None:  # else completed before a restart: its callback, as it was then
            await asyncio.sleep(self.callback_delay_s)
            session.completed_at = dt.datetime.now(dt.UTC)
            if session.paid:
                session.receipt = wire.receipt("T")
            self._remember(
                "stk_completed",
                checkout_request_id=session.checkout_request_id,
                completed_at=session.completed_at.isoformat(),
                receipt=session.receipt,
            )
        body = wire.to_json(results.stk_callback(session))
        for attempt in range(deliveries):
            if attempt:
                await asyncio.sleep(self.callback_delay_s)
            await self._post_callback(session.callback_url, body)
        self._remember("stk_delivered", checkout_request_id=session.checkout_request_id)

    async def _stk_query(self, body: dict[str, Any]) -> dict[str, object]:
        business_shortcode = wire.shortcode(body, "BusinessShortCode")
        password = wire.require_str(body, "Password", max_len=512)
        timestamp = wire.timestamp(body)
        checkout_id = wire.require_str(body, "CheckoutRequestID", max_len=100)
        self._check_merchant(business_shortcode, password, timestamp)
        session = self._sessions.get(checkout_id)
        if session is None:
            raise wire.bad_request("CheckoutRequestID")
        if session.completed_at is None:
            raise wire.still_processing(checkout_id)
        return {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": session.merchant_request_id,
            "CheckoutRequestID": session.checkout_request_id,
            "ResultCode": str(session.result_code),
            "ResultDesc": session.result_desc,
        }

    # ---------------------------------------------------------------------------------- B2C

    def _initiator_refusal(self, initiator: str, credential: str, party_a: str) -> tuple[int, str] | None:
        """Daraja accepts such requests and refuses them in the asynchronous result."""
        password = self.certificate.decrypt_credential(credential)
        if not hmac.compare_digest(initiator.encode(), self._initiator_name.encode()) or password is None:
            return results.INITIATOR_INVALID
        if not hmac.compare_digest(password.encode(), self._initiator_password.encode()):
            return results.INITIATOR_INVALID
        if party_a != self._b2c_shortcode:
            return results.NOT_PERMITTED
        return None

    async def _b2c(self, body: dict[str, Any]) -> dict[str, object]:
        originator_id = wire.require_str(body, "OriginatorConversationID", max_len=100)
        initiator = wire.require_str(body, "InitiatorName")
        credential = wire.require_str(body, "SecurityCredential", max_len=4096)
        if body.get("CommandID") not in wire.B2C_COMMANDS:
            raise wire.bad_request("CommandID")
        amount = wire.amount(body, "Amount", wire.B2C_MIN_KES, wire.B2C_MAX_KES)
        party_a = wire.shortcode(body, "PartyA")
        party_b = wire.msisdn(body, "PartyB")
        wire.require_str(body, "Remarks", min_len=2, max_len=100)
        timeout_url = wire.callback_url(body, "QueueTimeOutURL")
        result_url = wire.callback_url(body, "ResultURL")
        # The B2C docs spell it "Occassion"; Transaction Status and many clients write "Occasion".
        occasion = wire.optional_str(body, "Occassion", max_len=100) or wire.optional_str(body, "Occasion", max_len=100)
        if originator_id in self._payouts:
            raise wire.duplicate_originator()
        now = dt.datetime.now(dt.UTC)
        behaviour = b2c_behaviour(party_b)
        refusal = self._initiator_refusal(initiator, credential, party_a)
        if refusal is None and behaviour is B2cBehaviour.NOT_REGISTERED:
            refusal = results.NOT_REGISTERED
        code, desc = refusal or (0, results.PROCESSED_OK)
        payout = results.Payout(
            originator_conversation_id=originator_id,
            conversation_id=wire.conversation_id(now),
            transaction_id=wire.receipt("U"),
            amount_kes=amount,
            party_a=party_a,
            party_b=party_b,
            result_url=result_url,
            queue_timeout_url=timeout_url,
            occasion=occasion,
            result_code=code,
            result_desc=desc,
            initiated_at=now,
        )
        if payout.paid:  # the money moves now; the result only reports it
            self._balances_cents["utility"] -= amount * 100
            self._balances_cents["charges"] -= results.B2C_FEE_CENTS
            payout.balances_cents = dict(self._balances_cents)
        self._payouts[originator_id] = payout
        delivery = behaviour if refusal is None else B2cBehaviour.PAID
        if self.recorder is not None:
            self._remember("b2c", **results.as_record(payout), behaviour=delivery.value)
        self._spawn(self._finish_b2c(payout, delivery))
        return {
            "ConversationID": payout.conversation_id,
            "OriginatorConversationID": originator_id,
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        }

    async def _finish_b2c(self, payout: results.Payout, behaviour: B2cBehaviour) -> None:
        await self._deliver_b2c(payout, behaviour)
        self._remember("b2c_delivered", originator_conversation_id=payout.originator_conversation_id)

    async def _deliver_b2c(self, payout: results.Payout, behaviour: B2cBehaviour) -> None:
        await asyncio.sleep(self.callback_delay_s)
        if behaviour is B2cBehaviour.NO_RESULT:
            return
        if behaviour is B2cBehaviour.QUEUE_TIMEOUT:
            notice = results.queue_timeout(payout.originator_conversation_id, payout.conversation_id)
            await self._post_callback(payout.queue_timeout_url, wire.to_json(notice))
            return
        body = wire.to_json(results.b2c_result(payout))
        await self._post_callback(payout.result_url, body)
        if behaviour is B2cBehaviour.PAID_TWICE:
            await asyncio.sleep(self.callback_delay_s)
            await self._post_callback(payout.result_url, body)

    # ---------------------------------------------------------------------------------- Transaction Status

    async def _transaction_status(self, body: dict[str, Any]) -> dict[str, object]:
        initiator = wire.require_str(body, "Initiator")
        credential = wire.require_str(body, "SecurityCredential", max_len=4096)
        if body.get("CommandID") != "TransactionStatusQuery":
            raise wire.bad_request("CommandID")
        transaction_id = wire.optional_str(body, "TransactionID", max_len=100)
        original_id = wire.optional_str(body, "OriginalConversationID", max_len=100)
        if transaction_id is None and original_id is None:
            raise wire.bad_request("TransactionID")
        party_a = wire.shortcode(body, "PartyA")
        if str(body.get("IdentifierType")) not in {"1", "2", "4"}:
            raise wire.bad_request("IdentifierType")
        result_url = wire.callback_url(body, "ResultURL")
        wire.callback_url(body, "QueueTimeOutURL")
        wire.optional_str(body, "Remarks", max_len=100)
        occasion = wire.optional_str(body, "Occasion", max_len=100)
        now = dt.datetime.now(dt.UTC)
        originator_id = wire.originator_conversation_id()
        conversation = wire.conversation_id(now)
        refusal = self._initiator_refusal(initiator, credential, self._b2c_shortcode)
        if party_a not in {self._b2c_shortcode, self._shortcode}:
            refusal = refusal or results.NOT_PERMITTED
        result = results.transaction_status_result(
            originator_conversation_id=originator_id,
            conversation_id=conversation,
            occasion=occasion,
            record=self._status_record(transaction_id, original_id),
            refused=refusal,
        )
        self._spawn(self._deliver_later(result_url, wire.to_json(result)))
        return {
            "OriginatorConversationID": originator_id,
            "ConversationID": conversation,
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        }

    def _status_record(self, transaction_id: str | None, original_id: str | None) -> results.StatusRecord | None:
        for payout in self._payouts.values():
            if original_id is not None and payout.originator_conversation_id == original_id:
                return results.status_record_for_payout(payout)
            if transaction_id is not None and payout.paid and payout.transaction_id == transaction_id:
                return results.status_record_for_payout(payout)
        if transaction_id is not None:
            for session in self._sessions.values():
                if session.receipt == transaction_id:
                    return results.status_record_for_stk(session)
        return None

    async def _deliver_later(self, url: str, body: str) -> None:
        await asyncio.sleep(self.callback_delay_s)
        await self._post_callback(url, body)

    # ---------------------------------------------------------------------------------- delivery and journal

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_callback(self, url: str, body: str) -> None:
        # aiohttp, not httpx: httpcore's pool checks every pooled connection on each request, which under a burst of
        # callbacks was half of the sandbox's CPU (docs/performance.md, round 5)
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=CLIENT_KEEPALIVE_S),
                timeout=self._callback_timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        status: int | None = None
        error: str | None = None
        try:
            async with self._http.post(
                url, data=body.encode(), headers={"Content-Type": JSON}, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("daraja_callback_failed", url=url, error=error)
        self._record(kind="callback", method="POST", url=url, status=status, body=body, error=error)

    def _record(self, **entry: object) -> None:
        entry["seq"] = len(self._journal) + 1
        entry["at"] = dt.datetime.now(dt.UTC).isoformat()
        self._journal.append(entry)


CLIENT_KEEPALIVE_S = 2.0  # well inside a server's idle timeout (uvicorn's default is 5 s): no reuse race


def _misleading_shortcode_error() -> wire.DarajaError:
    # Daraja's FAQ: a request without Content-Type: application/json is answered as if the shortcode were wrong.
    return wire.bad_request("BusinessShortCode")
