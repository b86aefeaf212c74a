"""A process's health over HTTP: ``/healthz`` (the process answers), ``/readyz`` (its own readiness) and, where it
has some, ``/metrics`` (Prometheus text). The gateway and the worker serve it; the API has its own routes.

A deliberately tiny asyncio HTTP/1.1 responder: GET routes only, no framework, a timeout on every read and on every
answer's work (a readiness check or a metrics collection that hangs is answered 503, not left open).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from penpay.logging import get_logger

log = get_logger(__name__)
_READ_TIMEOUT_S = 5.0
_ANSWER_TIMEOUT_S = 5.0

Ready = Callable[[], bool | Awaitable[bool]]
Metrics = Callable[[], Awaitable[bytes]]


class HealthServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        ready: Ready,
        metrics: Metrics | None = None,
        answer_timeout_s: float = _ANSWER_TIMEOUT_S,
    ) -> None:
        self._host = host
        self._answer_timeout_s = answer_timeout_s
        self._port = port
        self._ready = ready
        self._metrics = metrics
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
            status, content_type, payload = await self._route(request_line)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, request_line: list[str]) -> tuple[str, str, bytes]:
        if len(request_line) < 2 or request_line[0] != "GET":
            return _json("405 Method Not Allowed", {"error": "method not allowed"})
        path = request_line[1].split("?", 1)[0]
        if path == "/healthz":
            return _json("200 OK", {"status": "ok"})
        if path == "/readyz":
            ready = await self._answer(self._is_ready, "readyz")
            return _json("200 OK" if ready else "503 Service Unavailable", {"ready": bool(ready)})
        if path == "/metrics" and self._metrics is not None:
            text = await self._answer(self._metrics, "metrics")
            if not isinstance(text, bytes):
                return _json("503 Service Unavailable", {"error": "metrics could not be collected"})
            return "200 OK", CONTENT_TYPE_LATEST, text
        return _json("404 Not Found", {"error": "not found"})

    async def _is_ready(self) -> bool:
        answer = self._ready()
        return bool(await answer) if inspect.isawaitable(answer) else bool(answer)

    async def _answer(self, work: Callable[[], Awaitable[object]], route: str) -> object | None:
        """``work``'s answer, or None when it failed or took longer than ``answer_timeout_s`` (logged)."""
        try:
            async with asyncio.timeout(self._answer_timeout_s):
                return await work()
        except Exception as exc:
            log.warning("health_answer_failed", route=route, error=repr(exc))
            return None


def _json(status: str, body: dict[str, object]) -> tuple[str, str, bytes]:
    return status, "application/json", json.dumps(body).encode()
