"""An ``httpx`` transport over ``aiohttp``'s connection pool, for the Daraja client.

Why: httpcore's pool checks every pooled connection, with a ``select()`` on each idle one, for every request and
every answer, and runs its I/O through anyio; under load that was about a fifth of a worker's CPU (and half of the
sandbox's, which posted callbacks the same way). aiohttp keeps idle connections per host and parses HTTP in C. The
Daraja client keeps its ``httpx`` interface (its tests inject ``httpx.MockTransport``); only the wire changes.

The one thing the money path needs from a transport is to say, when a request fails, whether it was **sent**. A POST
that may have reached Daraja must never be sent again before the provider is asked (``adapters.daraja.client``).
aiohttp's errors are mapped to httpx's so that only failures that provably happened before a byte of the request was
written count as "not sent":

- ``ClientConnectorError`` (DNS, refused, TLS handshake) -> ``httpx.ConnectError``: no connection, nothing sent;
- ``ConnectionTimeoutError`` (waiting for a pooled connection or for the TCP connect) -> ``httpx.ConnectTimeout``;
- a read timeout (``ServerTimeoutError``) -> ``httpx.ReadTimeout``: sent, no answer;
- anything else (the server hung up, a reset while writing or reading, a truncated body) -> ``httpx.ReadError``:
  treated as possibly sent.

Other rules kept from httpx's defaults: redirects are never followed (a 307 would re-POST a payment), aiohttp keeps no
cookies (httpx's client owns them), bodies are handed to httpx undecoded, which decodes them as it would its own, and
TLS certificates are verified as httpx verifies them (``httpx.create_ssl_context``: certifi's bundle, or
``SSL_CERT_FILE``/``SSL_CERT_DIR``; not aiohttp's default, the system's store, which a slim image may lack). This
transport does not go through proxies: httpx honours ``HTTP(S)_PROXY`` only with its own transport, so a client whose
URL the environment routes through a proxy (:func:`env_proxy_for`) keeps httpx's.
"""

from __future__ import annotations

import ssl
import urllib.request  # noqa: TID251 - only the environment's proxy rules (getproxies, proxy_bypass); no request
from urllib.parse import urlsplit

import aiohttp
import httpx

# aiohttp computes these from the body itself
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Requests over one ``aiohttp.ClientSession``, created on first use (inside the event loop)."""

    def __init__(self, *, max_connections: int = 100, keepalive_expiry_s: float = 2.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_expiry_s, ssl=_tls_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, timeout=_NO_TIMEOUT
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeout = _timeout(request)
        body = await request.aread()
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower().decode("latin-1") not in _OWN_HEADERS
        ]
        try:
            async with session.request(
                request.method,
                str(request.url),
                data=body or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                compress=False,
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=list(answer.raw_headers),
                    content=content,
                    request=request,
                    extensions={"http_version": f"HTTP/{answer.version.major}.{answer.version.minor}".encode()}
                    if answer.version
                    else {},
                )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(f"not connected: {exc!r}", request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection in time: {exc!r}", request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer in time: {exc!r}", request=request) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(f"failed after the connection opened: {exc!r}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)


def _tls_context() -> ssl.SSLContext:
    """httpx's own: certifi's bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when the environment names one."""
    return httpx.create_ssl_context()


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts (``connect``, ``read``, ``pool``) as aiohttp's. aiohttp's ``connect`` covers
    waiting for a pooled connection and opening one; ``sock_read`` is the gap allowed between bytes of the answer."""
    given = request.extensions.get("timeout", {})
    connect = given.get("connect")
    pool = given.get("pool")
    waits = [t for t in (connect, pool) if t is not None]
    return aiohttp.ClientTimeout(
        total=None,
        connect=sum(waits) if waits else None,
        sock_connect=connect,
        sock_read=given.get("read"),
    )


def env_proxy_for(url: str) -> bool:
    """Whether the environment sends ``url`` through a proxy (``HTTP(S)_PROXY``/``ALL_PROXY``, less ``NO_PROXY``)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()  # noqa: TID251
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")  # noqa: TID251
