"""Group commit for requests that arrive together: :class:`MicroBatcher`.

``submit(item)`` queues the item and waits for its result. At most ``max_in_flight`` flushes run at once, each
taking up to ``max_batch`` queued items; while they wait on the database, newcomers queue and form the next batch.
So an idle service answers a lone request at once (a batch of one), and a busy one pays the round trips and the
commit once per batch instead of once per request: the batch size follows the load by itself, with no timer.

``linger_s`` trades a little latency for fewer, larger batches at moderate rates: a drainer that finds fewer than
``max_batch`` items waits up to that long for more (at once when the queue fills). Without it a service that keeps
up with its load flushes batches of one or two back to back, and each costs nearly what a batch of dozens does: the
worker's stages lingering 40 ms took a paced 100 deposits/s from 18 to 12.6 ms of CPU a deposit, and the API beside
them from a p99 of 24 to 15 ms, bursts unchanged (docs/performance.md, round 17). The API's intakes do not linger:
their latency is the client's.

``max_wait_s`` bounds how long an item may have waited, counted from ``submit``'s ``since`` (when the request it
carries arrived; by default, when it was submitted): an item already older on submit is refused at once, and one
that is older when a drainer comes to take it is not flushed; either way its caller gets
:class:`QueueDeadlineExceeded`. When the database stalls or falls behind, the queue would otherwise grow without
bound, and requests whose clients gave up long ago would still be written when it recovers (a deposit's STK prompt
reaching a phone minutes after its app said the request failed); with a deadline they are told to retry instead,
before touching the database, so a retry with the same idempotency key starts afresh. Only intakes whose callers
can retry use it: the API's deposit and withdrawal intakes do; its callback intake does not (Safaricom does not
resend a callback).

A flush returns one result per item, in order. If it raises, every item of that batch gets the exception. A caller
that gives up waiting (a client disconnect cancels its request) does not cancel the flush: the batch commits or
not as a whole, and the caller's retry with the same idempotency key finds out which.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
Flush = Callable[[list[T]], Awaitable[Sequence[R]]]


class QueueDeadlineExceeded(Exception):
    """The item had waited longer than the batcher's ``max_wait_s`` and was not flushed."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"waited {waited_s:.2f} s, longer than its deadline")
        self.waited_s = waited_s


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        flush: Flush[T, R],
        *,
        max_batch: int = 64,
        max_in_flight: int = 2,
        linger_s: float = 0.0,
        max_wait_s: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be positive")
        if linger_s < 0 or max_wait_s < 0:
            raise ValueError("linger_s and max_wait_s must not be negative")
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._max_wait_s = max_wait_s  # 0: no deadline
        self._full = asyncio.Event()  # set while the queue holds a whole batch: a lingering drainer stops waiting
        self._queue: deque[tuple[T, asyncio.Future[R], float]] = deque()  # item, its waiter, when its wait began
        self._drainers: set[asyncio.Task[None]] = set()
        self._draining = 0  # drainers that may still take from the queue (a finished task may not be discarded yet)

    async def submit(self, item: T, *, since: float | None = None) -> R:
        """Queue ``item`` and wait for its result. ``since``: when the item's wait began, in the event loop's clock
        (``loop.time()``), for the deadline; by default now."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        began = now if since is None else min(since, now)
        if self._max_wait_s and now - began > self._max_wait_s:
            raise QueueDeadlineExceeded(now - began)
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future, began))
        if len(self._queue) >= self._max_batch:
            self._full.set()
        if self._draining < self._max_in_flight:
            self._draining += 1
            task = asyncio.create_task(self._drain(), name="micro-batch")
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await future  # cancelling the wait cancels only this future; the flush goes on

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # in the same step as the last look at the queue: an item queued after it starts a new drainer (a
            # done task's discard callback runs later, so counting tasks would leave that item waiting forever)
            self._draining -= 1

    async def _drain_queue(self) -> None:
        while self._queue:
            if self._linger_s and len(self._queue) < self._max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger_s)
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            if len(self._queue) < self._max_batch:
                self._full.clear()
            if self._max_wait_s:
                batch = self._within_deadline(batch)
                if not batch:
                    continue
            try:
                results = await self._flush([item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a flush of {len(batch)} items returned {len(results)} results")
            except Exception as exc:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException as exc:  # cancelled (shutdown): the waiters must not hang
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _within_deadline(
        self, batch: list[tuple[T, asyncio.Future[R], float]]
    ) -> list[tuple[T, asyncio.Future[R], float]]:
        """The batch's items that have not waited longer than ``max_wait_s``; the others' callers are answered
        :class:`QueueDeadlineExceeded` now (a caller that gave up already is left alone)."""
        now = asyncio.get_running_loop().time()
        fresh = []
        for item, future, began in batch:
            waited = now - began
            if waited <= self._max_wait_s:
                fresh.append((item, future, began))
            elif not future.done():
                future.set_exception(QueueDeadlineExceeded(waited))
        return fresh

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def aclose(self) -> None:
        """Wait for the flushes in progress (and what is queued behind them) to finish."""
        while self._drainers:
            await asyncio.gather(*list(self._drainers), return_exceptions=True)
