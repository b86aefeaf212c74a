"""The servers' coalescing transport: one socket write per event-loop step, nothing reordered or lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from penpay.coalescing import CoalescingTransport
from penpay.sandbox.control import AppServer


class RecordingTransport(asyncio.Transport):
    """What a socket transport was asked to do, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.calls.append(("set_protocol", protocol))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0


async def test_the_writes_of_one_step_go_to_the_socket_together_at_its_end() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())

    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"ok"))
    assert inner.calls == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n") + 2

    await asyncio.sleep(0)
    assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    assert transport.get_write_buffer_size() == 0

    transport.writelines([b"next", b" step"])
    await asyncio.sleep(0)
    assert inner.calls[1:] == [("write", b"next step")]


@pytest.mark.parametrize("ending", ["close", "abort", "write_eof", "set_protocol"])
async def test_what_is_kept_is_written_before_the_connection_ends_or_changes_hands(ending: str) -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    protocol = asyncio.Protocol()

    transport.write(b"last answer")
    if ending == "set_protocol":
        transport.set_protocol(protocol)
    else:
        getattr(transport, ending)()
    await asyncio.sleep(0)  # the step's own flush finds nothing left: written once, not twice

    assert inner.calls == [("write", b"last answer"), (ending, protocol if ending == "set_protocol" else None)]


async def test_what_was_kept_for_a_connection_the_client_closed_meanwhile_is_dropped() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())

    transport.write(b"an answer nobody waits for")
    inner.closing = True  # the client went away before the step ended (uvloop would raise on the write)
    await asyncio.sleep(0)

    assert inner.calls == []


async def test_everything_else_is_the_socket_transports_own() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())

    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)
    assert transport.get_extra_info("sockname", "none") == "none"
    assert not transport.is_closing()
    transport.close()
    assert transport.is_closing()


# ------------------------------------------------------------------------------------ a real uvicorn server
async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":  # chunked, its parts several steps apart
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    """Served as the sandbox serves its apps (the API's server is uvicorn.run with the same protocol)."""
    served = AppServer(app, name="test")
    await served.start("127.0.0.1", 0)
    yield served.port
    await served.stop()


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def test_a_kept_alive_connection_gets_every_answer_whole_and_in_order(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: t\r\n\r\n" % i for i in range(20)))  # pipelined

    bodies = [(await _answer(reader))[1] for _ in range(20)]

    assert bodies == [b"/%d" % i for i in range(20)]
    writer.close()


async def test_a_streamed_answer_arrives_whole_and_a_closing_request_is_answered_before_the_close(
    server: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\nGET /last HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")

    head, body = await _answer(reader)
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"one,two,three"
    head, body = await _answer(reader)
    assert b"connection: close" in head and body == b"/last"
    assert await reader.read() == b""  # then the server closed it
    writer.close()
