"""The gateway's socket to Deriv as it opens: what its handshake asks of the server."""

from __future__ import annotations

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from penpay.gateway.connection import DerivSocket

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
