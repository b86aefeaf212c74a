"""A lean HTTP/1.1 keep-alive client for the load generator, on plain asyncio streams.

Why not httpx (used for the control calls) or Locust: on a 2-core box the load generator shares the CPU with
MariaDB, Redis and every PenPay process, so what it burns per request is taken from the system under test. httpx
costs roughly 0.3-0.5 ms of CPU per request; this client writes pre-formatted request bytes and parses only the
status line, ``Content-Length`` (or chunked framing) and the body: a few tens of microseconds. Every call has a
deadline; a connection that errs or times out is closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed, timed out or answered something that is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


IDLE_REUSE_S = 3.0  # below uvicorn's 5 s keep-alive timeout: an older idle connection is closed, not reused


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send one request, read one answer; also says whether the server keeps the connection open."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.1 status line: {lines[0]!r}")
        status = int(parts[1])
        length = -1
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection":
                keep = value.strip().lower() == b"keep-alive" or (keep and value.strip().lower() != b"close")
        if chunked:
            body = await self._chunks()
        elif length >= 0:
            body = await self.reader.readexactly(length)
        else:
            body = await self.reader.read()
            keep = False
        return Answer(status, body), keep

    async def _chunks(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one ``http://host:port`` origin."""

    def __init__(self, base_url: str, *, max_connections: int = 64, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load generator speaks plain http only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.authority = f"{self.host}:{self.port}".encode()
        self._timeout_s = timeout_s
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)

    def build(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
        """The request's bytes (built once per request; the caller may also pre-build them)."""
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.authority]
        head.extend(f"{name}: {value}".encode() for name, value in headers.items())
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def _reusable(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_REUSE_S:
                return conn
            conn.close()
        return None

    async def send(self, request: bytes) -> Answer:
        """One request with a deadline. A reused keep-alive connection that the server closed before answering
        (nothing was read) is replaced by a fresh one once, as HTTP clients do."""
        async with self._slots:
            reused = self._reusable()
            try:
                return await self._send_on(reused, request)
            except asyncio.IncompleteReadError as exc:
                if reused is None or exc.partial:
                    raise HttpError(repr(exc)) from exc
            except ConnectionResetError as exc:
                if reused is None:
                    raise HttpError(repr(exc)) from exc
            try:
                return await self._send_on(None, request)
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                raise HttpError(repr(exc)) from exc

    async def _send_on(self, conn: _Conn | None, request: bytes) -> Answer:
        try:
            async with asyncio.timeout(self._timeout_s):
                if conn is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    conn = _Conn(reader, writer)
                answer, keep = await conn.exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            if conn is not None:
                conn.close()
            raise
        except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError) as exc:
            if conn is not None:
                conn.close()
            raise HttpError(repr(exc)) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if keep:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
