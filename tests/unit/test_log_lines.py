"""Log lines: each written at once outside an event loop; inside one, a step's lines leave in one write, in order."""

from __future__ import annotations

import asyncio
import io

from penpay.logging import StepLines, StepLogger


class Recording(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().write(data)


def test_outside_an_event_loop_each_line_is_written_at_once() -> None:
    out = Recording()
    logger = StepLogger(StepLines(out))
    logger.info(b'{"event":"a"}')
    logger.error(b'{"event":"b"}')
    assert out.writes == [b'{"event":"a"}\n', b'{"event":"b"}\n']


async def test_the_lines_of_one_step_leave_together_at_its_end_in_order() -> None:
    out = Recording()
    logger = StepLogger(StepLines(out))
    for n in range(3):
        logger.info(b"line %d" % n)
    assert out.writes == []  # kept until the step ends
    await asyncio.sleep(0)
    assert out.writes == [b"line 0\nline 1\nline 2\n"]

    async def one(n: int) -> None:
        logger.info(b"task %d" % n)

    await asyncio.gather(*(one(n) for n in range(3)))  # three tasks run in one step
    logger.info(b"next step")
    await asyncio.sleep(0)
    assert out.writes[1:] == [b"task 0\ntask 1\ntask 2\n", b"next step\n"]


async def test_a_kept_step_is_written_by_a_flush_and_not_again() -> None:
    out = Recording()
    lines = StepLines(out)
    lines.line(b"kept\n")
    lines.flush()  # as at exit
    await asyncio.sleep(0)
    assert out.writes == [b"kept\n"]


def test_lines_kept_by_a_loop_that_stopped_are_written_with_the_next_line() -> None:
    out = Recording()
    lines = StepLines(out)

    loop = asyncio.new_event_loop()

    def last_words() -> None:
        lines.line(b"kept\n")
        loop.stop()  # the loop ends with this step: the flush it scheduled never runs

    loop.call_soon(last_words)
    try:
        loop.run_forever()
    finally:
        loop.close()
    assert out.writes == []
    lines.line(b"after\n")  # outside any loop
    assert out.writes == [b"kept\n", b"after\n"]

    async def next_loop() -> None:
        lines.line(b"in another loop\n")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert out.writes[2:] == [b"in another loop\n"]
