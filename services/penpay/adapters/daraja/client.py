"""A thin async Daraja client: OAuth, STK Push, STK Push Query, B2C v3 and Transaction Status.

Why our own client (reference/daraja.md §10): no package on PyPI combines async httpx, caller-controlled
OriginatorConversationIDs and no retry of money-moving POSTs. The rules it keeps:

- Explicit timeouts on every call (connect 5 s, read ``timeout_s``).
- **No automatic retry of money-moving POSTs** (STK Push, B2C). A request that may have reached Daraja and got no
  answer raises :class:`DarajaOutcomeUnknown`: ask with STK Push Query / Transaction Status before anything else.
  A connection that never opened raises :class:`DarajaTransientError` (nothing was sent).
- One retry, and only one, after ``404.001.03`` "Invalid Access Token": the request was refused, not executed,
  so refreshing the token and sending it again is safe.
- The OAuth token is cached and refreshed 5 minutes before expiry, by one task at a time (an ``asyncio.Lock``).
- Amounts are ``int`` shillings, MSISDNs ``2547XXXXXXXX``/``2541XXXXXXXX``; free-text fields are cut to Daraja's
  lengths and to ``[A-Za-z0-9 -]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from penpay.adapters.aiohttp_transport import AiohttpTransport, env_proxy_for
from penpay.adapters.daraja import credentials
from penpay.adapters.daraja.codes import (
    DarajaAuthError,
    DarajaOutcomeUnknown,
    DarajaPendingError,
    DarajaRefused,
    DarajaTransientError,
    Outcome,
    refusal,
)
from penpay.adapters.daraja.token_store import RedisTokenStore
from penpay.adapters.daraja.wire import (
    Accepted,
    DarajaPayloadError,
    StkPushResult,
    StkQueryResult,
    parse_accepted,
    parse_access_token,
    parse_stk_push,
    parse_stk_query,
)
from penpay.settings import Settings

MSISDN = re.compile(r"^254[17]\d{8}$")
ORIGINATOR_ID = re.compile(r"^[A-Za-z0-9]{1,20}$")
_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 -]")
TOKEN_REFRESH_MARGIN_S = 300
# An idle connection is dropped after this long, well inside any server's idle timeout (uvicorn's and many proxies'
# are 5 s): reusing one the server is closing fails the request with a read error, and for an STK push or a B2C
# request that error leaves the outcome unknown (seen under load against the sandbox).
KEEPALIVE_EXPIRY_S = 2.0
STK_AMOUNT_KES = (1, 250_000)
B2C_AMOUNT_KES = (10, 250_000)
_TOKEN_REFUSED = frozenset({"404.001.03", "400.003.01", "401.003.01"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
USER_AGENT = f"penpay python-httpx/{httpx.__version__}".encode()
T = TypeVar("T")


class _KeepsNoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing. Daraja authenticates every call with its bearer token and has no session to
    keep, and httpx reads every response's cookies through urllib's cookie jar, building two adapter objects each
    time even when there are none: ~3 % of the worker's CPU at one STK push per deposit."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` that neither keeps nor sends cookies (see :class:`_KeepsNoCookies`)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("this client keeps no cookies")


_NO_COOKIES = _KeepsNoCookies()


def _default_transport(base_url: str, timeout: httpx.Timeout) -> httpx.AsyncBaseTransport:
    """aiohttp's pool (``adapters.aiohttp_transport``), or an httpx client with its own transport where the
    environment names a proxy for Daraja's host: httpx honours ``HTTP(S)_PROXY`` only with its own transport. Either
    keeps no cookies."""
    if env_proxy_for(base_url):
        limits = httpx.Limits(max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY_S)
        return ClientTransport(CookielessClient(timeout=timeout, limits=limits))
    return AiohttpTransport(keepalive_expiry_s=KEEPALIVE_EXPIRY_S)


class ClientTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` seen as a transport: each request goes through the client's ``send`` (its own
    transport, proxies and event hooks). How an injected client (the tests') or a proxied one is used."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.client.send(request)

    async def aclose(self) -> None:
        await self.client.aclose()


def sanitise(text: str, max_len: int) -> str:
    """Keep what Daraja accepts in free text (``[A-Za-z0-9 -]``), cut to its length."""
    return _UNSAFE_TEXT.sub("", text).strip()[:max_len].strip()


class DarajaClient:
    """Daraja over one httpx transport: aiohttp's pool (``adapters.aiohttp_transport``, which keeps "sent or not"
    exact), or an injected ``httpx.AsyncClient`` (closed by :meth:`aclose` only if the client made it).

    Requests are built as ``httpx.Request`` and handed to the transport itself, not through ``AsyncClient.post``:
    the client's merging of defaults, auth and redirect flows and cookie handling, none of which Daraja's calls use,
    cost about as much CPU as the transport's own work (~80 µs a call; one STK push per deposit)."""

    def __init__(
        self,
        *,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        b2c_shortcode: str,
        initiator_name: str,
        initiator_password: str,
        certificate: bytes | None = None,
        certificate_url: str | None = None,
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        token_store: RedisTokenStore | None = None,
    ) -> None:
        """``certificate`` (PEM or DER) encrypts the initiator password; in the sandbox it may instead be fetched
        once from ``certificate_url``."""
        if certificate is None and certificate_url is None:
            raise ValueError("B2C needs Safaricom's certificate (or, in the sandbox, the URL that serves one)")
        self._base_url = base_url.rstrip("/")
        self._basic = credentials.basic_auth(consumer_key, consumer_secret)
        self._shortcode = shortcode
        self._passkey = passkey
        self._b2c_shortcode = b2c_shortcode
        self._initiator_name = initiator_name
        self._initiator_password = initiator_password
        self._certificate = certificate
        self._certificate_url = certificate_url
        self._transaction_type = transaction_type
        self._party_b = party_b or shortcode
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._owns_transport = http is None
        self._transport = ClientTransport(http) if http is not None else _default_transport(base_url, self._timeout)
        self._timeout_extension = self._timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._monotonic = monotonic
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = asyncio.Lock()
        self._token_store = token_store
        self._credential: str | None = None
        self._credential_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http: httpx.AsyncClient | None = None, token_store: RedisTokenStore | None = None
    ) -> Self:
        """Build from the ``PENPAY_DARAJA_*`` settings. Without ``PENPAY_DARAJA_CERT_PATH`` the sandbox's own
        certificate is fetched (once, on the first B2C call) from its control API; production requires the path."""
        certificate: bytes | None = None
        certificate_url: str | None = None
        if settings.daraja_cert_path:
            certificate = Path(settings.daraja_cert_path).read_bytes()
        elif settings.is_production:
            raise ValueError("PENPAY_DARAJA_CERT_PATH is required in production")
        else:
            host = urlsplit(settings.daraja_base_url).hostname or "127.0.0.1"
            certificate_url = f"http://{host}:{settings.sandbox_http_port}/daraja/certificate"
        return cls(
            base_url=settings.daraja_base_url,
            consumer_key=settings.daraja_consumer_key,
            consumer_secret=settings.daraja_consumer_secret.get_secret_value(),
            shortcode=settings.daraja_shortcode,
            passkey=settings.daraja_passkey.get_secret_value(),
            b2c_shortcode=settings.daraja_b2c_shortcode,
            initiator_name=settings.daraja_initiator_name,
            initiator_password=settings.daraja_initiator_password.get_secret_value(),
            certificate=certificate,
            certificate_url=certificate_url,
            timeout_s=settings.daraja_timeout_s,
            http=http,
            token_store=token_store,
        )

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    # ---------------------------------------------------------------------------------- the four products

    async def stk_push(
        self, *, amount_kes: int, msisdn: str, account_reference: str, description: str, callback_url: str
    ) -> StkPushResult:
        """Ask the customer's phone for a payment. Raises :class:`DarajaOutcomeUnknown` if Daraja may have
        received it without answering (never re-push then), :class:`DarajaRefused` subclasses if refused."""
        _check_amount(amount_kes, STK_AMOUNT_KES)
        _check_msisdn(msisdn)
        reference = sanitise(account_reference, 12)
        if not reference:
            raise ValueError("AccountReference must keep at least one of [A-Za-z0-9 -]")
        timestamp, password = self._stk_password()
        payload = {
            "BusinessShortCode": self._shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "TransactionType": self._transaction_type,
            "Amount": amount_kes,
            "PartyA": msisdn,
            "PartyB": self._party_b,
            "PhoneNumber": msisdn,
            "CallBackURL": callback_url,
            "AccountReference": reference,
            "TransactionDesc": sanitise(description, 13) or reference[:13],
        }
        body = await self._post("/mpesa/stkpush/v1/processrequest", payload, moves_money=True)
        return _parsed(parse_stk_push, body, moves_money=True)

    async def stk_query(self, *, checkout_request_id: str) -> StkQueryResult:
        """The state of one STK Push: PENDING while the customer has not answered (no receipt in any case)."""
        timestamp, password = self._stk_password()
        payload = {
            "BusinessShortCode": self._shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        try:
            body = await self._post("/mpesa/stkpushquery/v1/query", payload, moves_money=False)
        except DarajaPendingError as pending:
            return StkQueryResult(
                checkout_request_id=checkout_request_id,
                outcome=Outcome.PENDING,
                result_code=None,
                result_desc=pending.error_message,
            )
        return _parsed(parse_stk_query, body, moves_money=False)

    async def b2c_payment(
        self,
        *,
        originator_conversation_id: str,
        amount_kes: int,
        msisdn: str,
        remarks: str,
        result_url: str,
        queue_timeout_url: str,
        occasion: str | None = None,
        command_id: str = "BusinessPayment",
    ) -> Accepted:
        """Pay a customer. ``originator_conversation_id`` is PenPay's payout id, stored before calling: resending
        with the same id is refused by Daraja as a duplicate (:class:`DarajaDuplicateError`), never paid twice."""
        if not ORIGINATOR_ID.match(originator_conversation_id):
            raise ValueError("OriginatorConversationID must be 1-20 ASCII letters or digits")
        _check_amount(amount_kes, B2C_AMOUNT_KES)
        _check_msisdn(msisdn)
        clean_remarks = sanitise(remarks, 100)
        if len(clean_remarks) < 2:
            raise ValueError("Remarks must keep 2-100 of [A-Za-z0-9 -]")
        payload: dict[str, Any] = {
            "OriginatorConversationID": originator_conversation_id,
            "InitiatorName": self._initiator_name,
            "SecurityCredential": await self._security_credential(),
            "CommandID": command_id,
            "Amount": amount_kes,
            "PartyA": self._b2c_shortcode,
            "PartyB": msisdn,
            "Remarks": clean_remarks,
            "QueueTimeOutURL": queue_timeout_url,
            "ResultURL": result_url,
        }
        if occasion and sanitise(occasion, 100):
            payload["Occassion"] = sanitise(occasion, 100)  # sic: the B2C docs' spelling
        body = await self._post("/mpesa/b2c/v3/paymentrequest", payload, moves_money=True)
        return _parsed(parse_accepted, body, moves_money=True)

    async def transaction_status(
        self,
        *,
        result_url: str,
        queue_timeout_url: str,
        transaction_id: str | None = None,
        original_conversation_id: str | None = None,
        remarks: str = "Status check",
        occasion: str | None = None,
    ) -> Accepted:
        """Ask for a transaction's state by its receipt (``transaction_id``) or by PenPay's B2C
        OriginatorConversationID (``original_conversation_id``): exactly one. The answer goes to ``result_url``."""
        if (transaction_id is None) == (original_conversation_id is None):
            raise ValueError("give exactly one of transaction_id and original_conversation_id")
        payload: dict[str, Any] = {
            "Initiator": self._initiator_name,
            "SecurityCredential": await self._security_credential(),
            "CommandID": "TransactionStatusQuery",
            "PartyA": self._b2c_shortcode,
            "IdentifierType": "4",
            "ResultURL": result_url,
            "QueueTimeOutURL": queue_timeout_url,
            "Remarks": sanitise(remarks, 100) or "Status check",
        }
        if transaction_id is not None:
            payload["TransactionID"] = transaction_id
        else:
            payload["OriginalConversationID"] = original_conversation_id
        if occasion and sanitise(occasion, 100):
            payload["Occasion"] = sanitise(occasion, 100)
        body = await self._post("/mpesa/transactionstatus/v1/query", payload, moves_money=False)
        return _parsed(parse_accepted, body, moves_money=False)

    # ---------------------------------------------------------------------------------- credentials

    def _stk_password(self) -> tuple[str, str]:
        timestamp = credentials.eat_timestamp(self._clock())
        return timestamp, credentials.stk_password(self._shortcode, self._passkey, timestamp)

    async def _security_credential(self) -> str:
        if self._credential is not None:
            return self._credential
        async with self._credential_lock:
            if self._credential is None:
                certificate = self._certificate
                if certificate is None and self._certificate_url is not None:
                    certificate = await self._fetch_certificate(self._certificate_url)
                if certificate is None:
                    raise ValueError("no certificate for the SecurityCredential")
                self._credential = credentials.security_credential(self._initiator_password, certificate)
            return self._credential

    async def _fetch_certificate(self, url: str) -> bytes:
        try:
            response = await self._send("GET", url)
        except httpx.HTTPError as exc:
            raise DarajaTransientError(
                http_status=None, error_code="", error_message=f"certificate fetch failed: {exc!r}"
            ) from exc
        if response.status_code != 200:
            raise DarajaTransientError(
                http_status=response.status_code, error_code="", error_message="certificate fetch failed"
            )
        return response.content

    async def access_token(self) -> str:
        """A valid access token: the one in hand, or one fetched (or shared by another process) now. Raises
        ``DarajaAuthError``, ``DarajaTransientError`` or ``DarajaThrottledError`` when none can be had."""
        return await self._access_token()

    async def _access_token(self) -> str:
        token = self._token
        if token is not None and self._monotonic() < self._token_refresh_at:
            return token
        async with self._token_lock:  # single flight: one refresh however many calls are waiting
            if self._token is not None and self._monotonic() < self._token_refresh_at:
                return self._token
            self._token = None
            if self._token_store is None:
                return await self._fetch_token()
            shared = await self._token_store.get()
            if shared is None:
                async with self._token_store.refreshing():  # one process asks Daraja; the others wait and share
                    shared = await self._token_store.get()
                    if shared is None:
                        return await self._fetch_token()
            self._token = shared.token
            self._token_refresh_at = self._monotonic() + max(0.0, shared.refresh_at - time.time())
            return shared.token

    async def _fetch_token(self) -> str:
        try:
            response = await self._send(
                "GET", f"{self._base_url}/oauth/v1/generate?grant_type=client_credentials", authorization=self._basic
            )
        except httpx.HTTPError as exc:
            raise DarajaTransientError(
                http_status=None, error_code="", error_message=f"OAuth request failed: {exc!r}"
            ) from exc
        if response.status_code != 200:
            raise _auth_refusal(response)
        try:
            issued = parse_access_token(response.content)
        except DarajaPayloadError as exc:
            raise DarajaAuthError(
                http_status=200, error_code="", error_message=f"unreadable OAuth answer: {exc}"
            ) from exc
        lifetime = issued.expires_in_s
        margin = TOKEN_REFRESH_MARGIN_S if lifetime > 2 * TOKEN_REFRESH_MARGIN_S else lifetime // 2
        self._token = issued.token
        self._token_refresh_at = self._monotonic() + lifetime - margin
        if self._token_store is not None:
            await self._token_store.put(issued.token, lifetime_s=lifetime, refresh_in_s=lifetime - margin)
        return issued.token

    async def _forget_token(self, token: str) -> None:
        if self._token == token:  # another task may already have refreshed it
            self._token = None
        if self._token_store is not None:
            await self._token_store.invalidate(token)  # only if no other process replaced it already

    # ---------------------------------------------------------------------------------- transport

    async def _post(self, path: str, payload: Mapping[str, Any], *, moves_money: bool) -> bytes:
        for attempt in (1, 2):
            token = await self._access_token()
            try:
                response = await self._send(
                    "POST", f"{self._base_url}{path}", authorization=f"Bearer {token}", body=_json_body(payload)
                )
            except _NOT_SENT as exc:
                raise DarajaTransientError(http_status=None, error_code="", error_message=f"not sent: {exc!r}") from exc
            except httpx.HTTPError as exc:
                if moves_money:
                    raise DarajaOutcomeUnknown(f"{path}: no answer after sending ({exc!r})") from exc
                raise DarajaTransientError(http_status=None, error_code="", error_message=repr(exc)) from exc
            if response.status_code == 200:
                return response.content
            error = _refusal_from(response)
            if error is None:
                if moves_money and response.status_code >= 500:
                    # A bare 5xx (a proxy's 502/504) does not say whether Daraja executed the request.
                    raise DarajaOutcomeUnknown(f"{path}: HTTP {response.status_code} without Daraja's envelope")
                raise DarajaTransientError(
                    http_status=response.status_code, error_code="", error_message=response.text[:200]
                )
            if error.error_code in _TOKEN_REFUSED and attempt == 1:
                await self._forget_token(token)
                continue  # refused, not executed: one retry with a fresh token is safe
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, method: str, url: str, *, authorization: str | None = None, body: bytes | None = None
    ) -> httpx.Response:
        """One request through the transport, its answer read whole. Raises what the transport raises (httpx's
        errors; ``adapters.aiohttp_transport`` says which of them mean "not sent")."""
        headers = [(b"Accept", b"*/*"), (b"User-Agent", USER_AGENT)]
        if authorization is not None:
            headers.append((b"Authorization", authorization.encode("latin-1")))
        if body is not None:
            headers.append((b"Content-Type", b"application/json"))
        parsed = self._urls.get(url)
        if parsed is None:  # a handful of URLs, each parsed once (httpx's parser was ~2 % of the worker's CPU)
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request(
            method, parsed, headers=headers, content=body, extensions={"timeout": self._timeout_extension}
        )
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


def _json_body(payload: Mapping[str, Any]) -> bytes:
    """A request's JSON as httpx's ``json=`` wrote it (compact, UTF-8)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _refusal_from(response: httpx.Response) -> DarajaRefused | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or "errorCode" not in data:
        return None
    return refusal(
        http_status=response.status_code,
        error_code=str(data.get("errorCode", "")),
        error_message=str(data.get("errorMessage", "")),
        request_id=str(data.get("requestId", "")),
    )


def _auth_refusal(response: httpx.Response) -> DarajaAuthError:
    error = _refusal_from(response)
    return DarajaAuthError(
        http_status=response.status_code,
        error_code=error.error_code if error else "",
        error_message=error.error_message if error else f"OAuth refused: {response.text[:200]!r}",
        request_id=error.request_id if error else "",
    )


def _parsed(parse: Callable[[bytes], T], body: bytes, *, moves_money: bool) -> T:
    try:
        return parse(body)
    except (DarajaPayloadError, ValueError) as exc:
        if moves_money:
            raise DarajaOutcomeUnknown(f"unreadable answer to a money-moving request: {exc}") from exc
        raise DarajaTransientError(http_status=200, error_code="", error_message=f"unreadable answer: {exc}") from exc


def _check_amount(amount_kes: int, bounds: tuple[int, int]) -> None:
    if isinstance(amount_kes, bool) or not isinstance(amount_kes, int):
        raise TypeError("amounts are whole shillings (int)")
    low, high = bounds
    if not low <= amount_kes <= high:
        raise ValueError(f"amount must be {low}..{high} KES")


def _check_msisdn(msisdn: str) -> None:
    if not MSISDN.match(msisdn):
        raise ValueError("msisdn must be normalised: 2547XXXXXXXX or 2541XXXXXXXX")
