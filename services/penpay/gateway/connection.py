"""The WebSocket to Deriv: ``req_id`` multiplexing on one socket, and the agent connection that keeps it alive.

``DerivSocket`` is one socket: many calls in flight, each matched to its answer by ``req_id``; streamed
subscription messages go to a callback. When the socket dies, every call still waiting fails with
``OutcomeUnknownError`` - it was sent, so it is never silently retried.

``DerivConnection`` is the gateway's long-lived agent socket: connect, authorize with the agent token, run the
``on_authorized`` hooks (re-subscribe balance), ping every ``ping_interval_s``, and reconnect with jittered
exponential backoff whenever the socket drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from penpay.coalescing import coalescing
from penpay.gateway.wire import (
    DerivCallError,
    DerivRejectedError,
    Json,
    NotSentError,
    OutcomeUnknownError,
    decode,
    encode,
    raise_for_error,
)
from penpay.logging import get_logger

log = get_logger(__name__)

SubscriptionHandler = Callable[[Json], None]
DerivCall = Callable[[Json], Awaitable[Json]]
AuthorizedHook = Callable[[DerivCall], Awaitable[None]]


def url_with_app_id(url: str, app_id: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"app_id": app_id, "l": "EN"})) if q)
    return urlunsplit(parts._replace(query=query))


@functools.lru_cache(maxsize=64)
def proxy_for(url: str) -> str | None:
    """The proxy ``connect`` would take for ``url`` from the environment (``https_proxy``, ``no_proxy``, ...), looked
    up once per URL: websockets looks it up on every connect by default, walking the whole environment, and the
    gateway connects once per withdrawal (a client's own session): that walk was ~13 % of the gateway's CPU in a
    withdrawal burst. The environment of a running process does not change."""
    return get_proxy(parse_uri(url))


class CoalescingClientConnection(ClientConnection):
    """A socket whose frames written in one event-loop step leave in one write: a batch's requests, sent together
    (``penpay.coalescing``). A frame kept for a socket that closes before the step ends is not sent, and its call
    ends as any call whose socket closed after the send: outcome unknown, settled from the statement."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(coalescing(transport))


class DerivSocket:
    """One WebSocket to Deriv with ``req_id`` multiplexing of concurrent calls."""

    def __init__(self, ws: ClientConnection, *, on_subscription: SubscriptionHandler | None = None) -> None:
        self._ws = ws
        self._on_subscription = on_subscription
        self._pending: dict[int, asyncio.Future[Json]] = {}
        self._req_ids = itertools.count(1)
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, *, open_timeout_s: float, on_subscription: SubscriptionHandler | None = None
    ) -> DerivSocket:
        try:
            # no permessage-deflate: Deriv's answers to money calls are a few hundred bytes, and compressing and
            # inflating each one was a thirtieth of the gateway's CPU (and of the sandbox's) under load
            ws = await connect(
                url,
                open_timeout=open_timeout_s,
                ping_interval=None,
                close_timeout=2,
                max_size=2**22,
                compression=None,
                create_connection=CoalescingClientConnection,
                proxy=proxy_for(url),
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise NotSentError(f"cannot connect to Deriv: {exc!r}") from exc
        return cls(ws, on_subscription=on_subscription)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def call(self, request: Json, *, timeout_s: float) -> Json:
        """Send one request and wait for its answer; Deriv errors raise ``DerivRejectedError``."""
        if self.closed:
            raise NotSentError("the Deriv socket is closed")
        req_id = next(self._req_ids)
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            try:
                await asyncio.wait_for(self._ws.send(encode({**request, "req_id": req_id})), timeout_s)
            except ConnectionClosed as exc:
                raise NotSentError("the Deriv socket closed before the request was written") from exc
            except TimeoutError as exc:
                raise OutcomeUnknownError("timed out while sending to Deriv") from exc
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except TimeoutError as exc:
                raise OutcomeUnknownError(f"no answer from Deriv within {timeout_s}s") from exc
        finally:
            self._pending.pop(req_id, None)
        return raise_for_error(answer)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 3)
        self._ws.transport.abort()
        await self._closed.wait()

    def abort(self) -> None:
        self._ws.transport.abort()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                try:
                    message = decode(raw)
                except ValueError:
                    log.warning("deriv.unparseable_message")
                    continue
                future = self._pending.get(message.get("req_id", -1))
                if future is not None and not future.done():
                    future.set_result(message)
                elif "subscription" in message and self._on_subscription is not None:
                    self._on_subscription(message)
                else:
                    log.debug("deriv.unmatched_message", msg_type=message.get("msg_type"))
        except ConnectionClosed:
            pass
        finally:
            self._closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(OutcomeUnknownError("the Deriv socket dropped before the answer"))


@contextlib.asynccontextmanager
async def client_session(
    url: str, token: str, *, timeout_s: float, loginid: str | None = None
) -> AsyncIterator[tuple[DerivSocket, Json]]:
    """A short-lived socket authorised with a user's token (for calls Deriv runs on the client's side)."""
    socket = await DerivSocket.open(url, open_timeout_s=timeout_s)
    try:
        try:
            answer = await socket.call({"authorize": token}, timeout_s=timeout_s)
        except OutcomeUnknownError as exc:  # authorize moves no money: nothing to reconcile
            raise NotSentError("authorize got no answer") from exc
        account: Json = answer["authorize"]
        if loginid is not None and account.get("loginid") != loginid:
            raise DerivRejectedError("LoginidMismatch", "the token does not authorise this login id", "authorize")
        yield socket, account
    finally:
        await socket.close()


class DerivConnection:
    """The agent's long-lived, self-healing, authorised socket."""

    def __init__(
        self,
        *,
        url: str,
        app_id: str,
        agent_token: str,
        call_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        ping_interval_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_subscription: SubscriptionHandler | None = None,
        on_authorized: list[AuthorizedHook] | None = None,
    ) -> None:
        self.url = url_with_app_id(url, app_id)
        self.call_timeout_s = call_timeout_s
        self._agent_token = agent_token
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._on_subscription = on_subscription
        self._on_authorized = list(on_authorized or [])
        self._socket: DerivSocket | None = None
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._random = random.Random()  # noqa: S311 - backoff jitter, not security
        self.account: Json = {}
        self.connects = 0

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._socket is not None and not self._socket.closed

    @property
    def agent_loginid(self) -> str:
        return str(self.account.get("loginid", ""))

    async def wait_ready(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.ready and loop.time() < deadline:
            # The event may still be set for a moment after the socket died, so re-check on a short period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), min(0.05, max(deadline - loop.time(), 0)))
            if self._ready.is_set() and not self.ready:
                await asyncio.sleep(0.01)
        return self.ready

    async def call(self, request: Json, *, timeout_s: float | None = None) -> Json:
        socket = self._socket
        if socket is None or not self._ready.is_set():
            raise NotSentError("the Deriv connection is not authorised")
        return await socket.call(request, timeout_s=timeout_s or self.call_timeout_s)

    async def run(self) -> None:
        """Connect, authorize, keep alive; reconnect with jittered exponential backoff until ``stop()``."""
        self._stopping.clear()
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except (DerivCallError, OSError, TimeoutError) as exc:
                failures += 1
                log.warning("deriv.connection_failed", error=str(exc), failures=failures)
            if self._stopping.is_set():
                break
            delay = min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(failures, 16))
            delay *= self._random.uniform(0.5, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self) -> None:
        self._stopping.set()
        socket = self._socket
        if socket is not None:
            await socket.close()

    async def _session(self) -> None:
        socket = await DerivSocket.open(
            self.url, open_timeout_s=self._connect_timeout_s, on_subscription=self._on_subscription
        )
        try:
            answer = await socket.call({"authorize": self._agent_token}, timeout_s=self.call_timeout_s)
            self.account = answer["authorize"]
            self._socket = socket
            self.connects += 1
            for hook in self._on_authorized:  # before "ready": they call this socket directly

                async def call_socket(request: Json, socket: DerivSocket = socket) -> Json:
                    return await socket.call(request, timeout_s=self.call_timeout_s)

                await hook(call_socket)
            self._ready.set()
            log.info("deriv.authorized", loginid=self.agent_loginid, connects=self.connects)
            await self._keepalive(socket)
        finally:
            self._ready.clear()
            self._socket = None
            await socket.close()
        log.warning("deriv.disconnected", loginid=self.agent_loginid)

    async def _keepalive(self, socket: DerivSocket) -> None:
        while not socket.closed and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(socket.wait_closed(), self._ping_interval_s)
            if socket.closed or self._stopping.is_set():
                return
            try:
                await socket.call({"ping": 1}, timeout_s=self.call_timeout_s)
            except DerivCallError:
                log.warning("deriv.ping_failed")
                socket.abort()
                return
