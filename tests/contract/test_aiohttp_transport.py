"""The Daraja client's transport (``adapters.aiohttp_transport``): what it tells httpx when a request fails, which the
money path's "never send a payment twice" rule depends on, and that it behaves as httpx's own transport otherwise.

A raw asyncio server on a real socket plays the far end, so each failure happens where it would on the wire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from penpay.adapters.aiohttp_transport import AiohttpTransport, env_proxy_for
from penpay.adapters.daraja.client import DarajaClient
from penpay.adapters.daraja.codes import DarajaOutcomeUnknown, DarajaRefused
from tests.contract.daraja_fixtures import CLIENT_CREDENTIALS

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # the request's bytes -> keep the connection?


@dataclass
class Far:
    url: str
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


@asynccontextmanager
async def far_end(handler: Handler) -> AsyncIterator[Far]:
    far = Far(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far.connections += 1
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                far.requests.append(request)
                if not await handler(request, writer):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    far.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield far
    finally:
        server.close()
        await server.wait_closed()


def answer(status: int, body: bytes, *headers: tuple[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ok(body: bytes = b'{"ok": true}', *headers: tuple[str, str]) -> Handler:
    async def handle(_: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, body, ("Content-Type", "application/json"), *headers))
        await writer.drain()
        return True

    return handle


@asynccontextmanager
async def client(**transport: float | int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=AiohttpTransport(**transport),  # type: ignore[arg-type]
        timeout=httpx.Timeout(2.0, connect=1.0),
    ) as http:
        yield http


TOKEN = b'{"access_token": "t", "expires_in": "3599"}'


@asynccontextmanager
async def daraja_client(base_url: str) -> AsyncIterator[DarajaClient]:
    """The client as the worker builds it (its own transport), against ``base_url``; closed after."""
    client = DarajaClient(
        base_url=base_url,
        **CLIENT_CREDENTIALS,
        certificate=b"unused",
        timeout_s=2.0,
    )
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_post_is_sent_once_with_its_headers_and_body_and_answered() -> None:
    async with far_end(ok()) as far, client() as http:
        response = await http.post(f"{far.url}/pay", json={"amount": 10}, headers={"Authorization": "Bearer t"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    [request] = far.requests
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /pay HTTP/1.1")
    assert b"\r\nAuthorization: Bearer t" in head
    assert json.loads(body) == {"amount": 10}
    assert f"Content-Length: {len(body)}".encode() in head


async def test_connections_are_kept_alive_and_reused() -> None:
    async with far_end(ok()) as far, client() as http:
        for _ in range(5):
            assert (await http.get(f"{far.url}/x")).status_code == 200
    assert len(far.requests) == 5
    assert far.connections == 1


async def test_a_refused_connection_is_a_connect_error_nothing_was_sent() -> None:
    async with far_end(ok()) as far:
        url = far.url
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"{url}/pay", json={})


async def test_a_hang_up_after_the_request_is_a_read_error_it_may_have_been_sent() -> None:
    async def hang_up(_: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with far_end(hang_up) as far, client() as http:
        with pytest.raises(httpx.ReadError) as failed:
            await http.post(f"{far.url}/pay", json={})
    assert not isinstance(failed.value, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    assert len(far.requests) == 1  # the request got there, and was not sent again


async def test_a_half_answer_is_a_read_error() -> None:
    async def half(_: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b'{"ok": true}')[:-5])
        await writer.drain()
        return False

    async with far_end(half) as far, client() as http:
        with pytest.raises(httpx.ReadError):
            await http.post(f"{far.url}/pay", json={})
    assert len(far.requests) == 1


async def test_no_answer_in_time_is_a_read_timeout() -> None:
    async def silent(_: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with far_end(silent) as far, client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{far.url}/pay", json={}, timeout=httpx.Timeout(0.3, connect=1.0))
    assert len(far.requests) == 1


async def test_waiting_too_long_for_a_pooled_connection_is_a_connect_timeout_nothing_was_sent() -> None:
    release, arrived = asyncio.Event(), asyncio.Event()

    async def slow(_: bytes, writer: asyncio.StreamWriter) -> bool:
        arrived.set()
        await release.wait()
        writer.write(answer(200, b"{}"))
        await writer.drain()
        return True

    async with far_end(slow) as far, client(max_connections=1) as http:
        first = asyncio.create_task(http.post(f"{far.url}/pay", json={"n": 1}))
        await arrived.wait()
        with pytest.raises(httpx.ConnectTimeout):
            await http.post(f"{far.url}/pay", json={"n": 2}, timeout=httpx.Timeout(2.0, connect=0.2, pool=0.1))
        release.set()
        assert (await first).status_code == 200
    assert len(far.requests) == 1


async def test_a_redirect_is_not_followed() -> None:
    async def redirect(_: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(307, b"", ("Location", "/elsewhere")))
        await writer.drain()
        return True

    async with far_end(redirect) as far, client() as http:
        response = await http.post(f"{far.url}/pay", json={})
    assert response.status_code == 307
    assert len(far.requests) == 1


async def test_a_compressed_answer_is_decoded_once() -> None:
    body = json.dumps({"ResponseCode": "0"}).encode()
    async with far_end(ok(gzip.compress(body), ("Content-Encoding", "gzip"))) as far, client() as http:
        response = await http.get(f"{far.url}/x")
    assert response.json() == {"ResponseCode": "0"}


async def test_cookies_are_httpx_clients_not_aiohttps() -> None:
    async with far_end(ok(b"{}", ("Set-Cookie", "s=1; Path=/"))) as far, client() as http:
        await http.get(f"{far.url}/x")
        await http.get(f"{far.url}/x")
    assert far.requests[1].lower().count(b"\r\ncookie: s=1\r\n") == 1


async def test_closing_the_client_closes_the_pool_and_it_reopens_on_use() -> None:
    transport = AiohttpTransport()
    async with far_end(ok()) as far:
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(f"{far.url}/x")).status_code == 200
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(f"{far.url}/x")).status_code == 200
    assert far.connections == 2


async def test_the_daraja_client_calls_a_hang_up_after_an_stk_push_unknown_and_does_not_resend_it() -> None:
    """End to end through the client the worker builds (its own aiohttp transport): the push reached the far end,
    which hung up; the outcome is unknown (to be asked with STK Push Query), and the push was sent once."""

    async def daraja(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if request.startswith(b"GET /oauth/v1/generate"):
            writer.write(answer(200, TOKEN))
            await writer.drain()
            return True
        return False

    async with far_end(daraja) as far, daraja_client(far.url) as client:
        with pytest.raises(DarajaOutcomeUnknown):
            await client.stk_push(
                amount_kes=10,
                msisdn="254712345678",
                callback_url="https://penpay.example/mpesa/callback",
                account_reference="PENPAY",
                description="Deposit",
            )
    pushes = [r for r in far.requests if r.startswith(b"POST /mpesa/stkpush/v1/processrequest")]
    assert len(pushes) == 1


async def test_a_certificate_not_signed_by_a_known_authority_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Certificates are verified, as httpx verifies them: a self-signed server gets no request."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await _read_request(reader))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client() as http:
            with pytest.raises(httpx.ConnectError) as refused:
                await http.post(f"https://127.0.0.1:{port}/pay", json={})
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(refused.value.__cause__, aiohttp.ClientConnectorCertificateError)
    assert requests == []


def test_the_environment_decides_which_urls_go_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert not env_proxy_for("https://api.safaricom.co.ke")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert env_proxy_for("https://api.safaricom.co.ke")
    assert not env_proxy_for("http://api.safaricom.co.ke")
    monkeypatch.setenv("NO_PROXY", "safaricom.co.ke")
    assert not env_proxy_for("https://api.safaricom.co.ke")


async def test_with_a_proxy_in_the_environment_the_daraja_client_sends_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This transport does not go through proxies, so a client the environment routes through one keeps httpx's own
    transport, which does: the far end below is the proxy, and sees the requests in absolute form."""

    async def proxy(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if request.startswith(b"GET http://daraja.invalid/oauth/v1/generate"):
            writer.write(answer(200, TOKEN))
        else:
            writer.write(answer(400, b'{"requestId": "1", "errorCode": "400.002.02", "errorMessage": "Bad Request"}'))
        await writer.drain()
        return True

    async with far_end(proxy) as far:
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", far.url)
        async with daraja_client("http://daraja.invalid") as client:
            with pytest.raises(DarajaRefused):
                await client.stk_query(checkout_request_id="ws_CO_1")
    assert [r.split(b" ", 2)[:2] for r in far.requests] == [
        [b"GET", b"http://daraja.invalid/oauth/v1/generate?grant_type=client_credentials"],
        [b"POST", b"http://daraja.invalid/mpesa/stkpushquery/v1/query"],
    ]
