"""The gateway's socket to Deriv as it opens: what its handshake asks of the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from penpay.coalescing import CoalescingTransport
from penpay.gateway.connection import DerivSocket
from tests.contract.deriv_fixtures import sim  # noqa: F401 - a fixture

pytestmark = pytest.mark.contract


async def test_the_socket_asks_for_no_compression() -> None:
    seen: list[Request] = []

    def record(_: ServerConnection, request: Request) -> None:
        seen.append(request)

    async def idle(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(idle, "127.0.0.1", 0, process_request=record) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        socket = await DerivSocket.open(f"ws://127.0.0.1:{port}/websockets/v3", open_timeout_s=5)
        try:
            [request] = seen
            # every answer is a few hundred bytes: deflating them cost more CPU than the bytes were worth
            assert "Sec-WebSocket-Extensions" not in request.headers
        finally:
            await socket.close()


class _CountingTransport:
    """Passes everything to ``inner`` and records each write that reaches it (one write = one ``send`` call)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _count_writes(connection: Any) -> _CountingTransport:
    transport = connection.transport
    assert isinstance(transport, CoalescingTransport)
    counting = _CountingTransport(transport._transport)
    transport._transport = counting
    return counting


class TestFramesOfOneStep:
    async def test_calls_made_in_one_step_leave_in_one_write_and_are_answered_in_one(self, sim):  # noqa: F811
        """A batch's requests (the gateway's socket) and their answers (the sandbox's) travel in one send each way."""
        socket = await DerivSocket.open(sim.url, open_timeout_s=5)
        try:
            await socket.call({"ping": 1}, timeout_s=5)  # the sandbox's side of the socket exists from here
            [session] = sim._sessions
            sent, answered = _count_writes(socket._ws), _count_writes(session.ws)
            answers = await asyncio.gather(*(socket.call({"ping": 1}, timeout_s=5) for _ in range(10)))
            assert [a["ping"] for a in answers] == ["pong"] * 10
            assert len(sent.writes) == 1
            assert len(answered.writes) == 1
        finally:
            await socket.close()
