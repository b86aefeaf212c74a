"""``BoundedTasks``: at most ``limit`` running, the caller held back while they are, every one drained."""

from __future__ import annotations

import asyncio

import pytest

from penpay.service_layer.background import BoundedTasks


async def test_at_most_limit_run_at_once_and_the_next_start_waits_for_a_slot() -> None:
    tasks = BoundedTasks(2, name="test")
    gates = [asyncio.Event() for _ in range(3)]
    ran: list[int] = []

    async def work(n: int) -> None:
        await gates[n].wait()
        ran.append(n)

    await tasks.start(work(0))
    await tasks.start(work(1))
    third = asyncio.create_task(tasks.start(work(2)))
    await asyncio.sleep(0.01)
    assert tasks.running == 2 and not third.done()

    gates[1].set()
    await asyncio.wait_for(third, timeout=1)  # a slot came free
    assert ran == [1] and tasks.running == 2

    gates[0].set()
    gates[2].set()
    await tasks.drain()
    assert sorted(ran) == [0, 1, 2] and tasks.running == 0


async def test_a_task_that_fails_frees_its_slot_and_drain_does_not_raise() -> None:
    tasks = BoundedTasks(1, name="test")

    async def fail() -> None:
        raise RuntimeError("boom")

    async def succeed() -> str:
        return "ok"

    await tasks.start(fail())
    await asyncio.wait_for(tasks.start(succeed()), timeout=1)  # the failed one gave its slot back
    await tasks.drain()
    assert tasks.running == 0


async def test_drain_waits_for_tasks_started_while_it_waits() -> None:
    tasks = BoundedTasks(2, name="test")
    done: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0.01)
        done.append("second")

    async def first() -> None:
        await tasks.start(second())
        done.append("first")

    await tasks.start(first())
    await tasks.drain()
    assert done == ["first", "second"]


async def test_a_start_cancelled_while_waiting_for_a_slot_runs_nothing() -> None:
    tasks = BoundedTasks(1, name="test")
    gate = asyncio.Event()
    ran: list[str] = []

    async def hold() -> None:
        await gate.wait()

    async def never() -> None:
        ran.append("never")

    await tasks.start(hold())
    waiting = asyncio.create_task(tasks.start(never()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await tasks.drain()
    assert ran == [] and tasks.running == 0


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BoundedTasks(0, name="test")
