"""A transport that joins the writes of one event-loop step into one socket write.

Each ``transport.write`` is a ``send`` system call, and on loopback each also runs the receiver's side of TCP and
wakes its event loop. Several writes in one step are common: uvicorn writes an answer's headers and its body in two
calls, and a WebSocket peer answering a batch of requests writes a frame for each. :class:`CoalescingTransport` keeps
the writes of one event-loop step and hands them to the socket together at the end of the step (``call_soon``), in
the order written: the bytes on the wire are the same, in fewer segments. Used by the API's and the sandbox's HTTP
servers (``http_protocol``), the sandbox's Deriv WebSocket server and the gateway's Deriv sockets.

Anything that ends or hands over the connection (``close``, ``abort``, ``write_eof``, ``set_protocol``) first writes
what is kept, so nothing is reordered or lost; only a connection the peer closed before the step ended gets
nothing more (as if the write had raced the close). Reading, flow control and everything else pass through.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class CoalescingTransport(asyncio.Transport):
    """A transport that passes every call to ``transport``, but joins the writes of one event-loop step."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    # ---------------------------------------------------------------------------------------------- writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is kept to the socket now (the step's end, or before the connection ends or changes hands).
        What was kept for a connection that closed meanwhile (the client went away between the answer and the
        step's end) is dropped, as uvicorn drops an answer to a client that is gone: uvloop raises on a write to
        a closed socket."""
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        kept = sum(len(data) for data in self._pending) if self._pending else 0
        return kept + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    # ---------------------------------------------------------------------------------------------- the rest
    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.flush()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()


def coalescing(transport: asyncio.BaseTransport) -> CoalescingTransport:
    """``transport`` (a stream transport, as a protocol's ``connection_made`` gets it) with its writes joined."""
    return CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
