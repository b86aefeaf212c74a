"""Work a step hands on to run after it has answered: :class:`BoundedTasks`.

A step that has committed what it must (so that a crash from here on is recovered from the database) may leave the
rest to a background task and answer at once, so that its caller can go on to the next batch while this one
finishes: the callback worker acknowledges a batch of callbacks once their payments are recorded, and the credits
those payments started run beside the next batch (``worker.subscriptions``). Without a bound, a busy stream would
start more such tasks than the process can finish; :meth:`BoundedTasks.start` therefore waits while ``limit`` are
running, which holds the caller's answer back, and so its stream's reading, until one ends.

:meth:`BoundedTasks.drain` waits for every task started; a process calls it before it closes what the tasks use.
A task that raises is logged: what it left undone must be recoverable by other means (the reconciler), because
nothing waits for its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from penpay.logging import get_logger

log = get_logger(__name__)


class BoundedTasks:
    def __init__(self, limit: int, *, name: str) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._name = name

    async def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background once fewer than ``limit`` are running (waiting until then)."""
        try:
            await self._slots.acquire()
        except BaseException:
            work.close()  # never awaited: no "coroutine was never awaited" warning, nothing half-done
            raise
        task = asyncio.create_task(work, name=self._name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background_task_failed", task=self._name, error=repr(exc), exc_info=exc)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every task started (including any started meanwhile) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
