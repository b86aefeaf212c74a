"""Health: ``/healthz`` (the process is alive) and ``/readyz`` (lease held + Deriv socket authorised) over HTTP.

A deliberately tiny asyncio HTTP/1.1 responder: two GET routes, no framework, a timeout on every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from penpay.logging import get_logger

log = get_logger(__name__)
_READ_TIMEOUT_S = 5.0


class HealthServer:
    def __init__(self, *, host: str, port: int, ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                request_line = (await reader.readline()).decode("latin-1").split()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            status, body = self._route(request_line)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, request_line: list[str]) -> tuple[str, dict[str, object]]:
        if len(request_line) < 2 or request_line[0] != "GET":
            return "405 Method Not Allowed", {"error": "method not allowed"}
        path = request_line[1].split("?", 1)[0]
        if path == "/healthz":
            return "200 OK", {"status": "ok"}
        if path == "/readyz":
            ready = self._ready()
            return ("200 OK" if ready else "503 Service Unavailable"), {"ready": ready}
        return "404 Not Found", {"error": "not found"}
