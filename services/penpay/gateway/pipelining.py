"""Redis commands issued in the same turn of the event loop, sent together as one pipeline.

A ``TransferBatch`` runs its transfers concurrently, and each makes the same Redis calls at the same moments: every
member reads its reference record, then claims it, then (as Deriv's answers come in) completes it. One round trip per
command is one socket write and one read for each of them, in the gateway and in Redis. :class:`CommandPipeline`
queues the commands its callers issue and, once every caller that was ready to run has had its turn, sends them all
in one non-transactional pipeline; each caller gets its own command's reply or error.

Nothing about a command changes but how it travels: each is still its own command (a Lua script stays atomic on its
own; no command waits for another's reply), and one caller's commands still go one after another, since it awaits
each reply before it sends the next. A connection that fails under a pipeline fails every command in it, just as it
would have failed each of them on its own: a caller sees the same error either way.

At most ``max_in_flight`` pipelines are out at once, each on a connection of its own: the commands issued while they
are all out wait and leave together, in the next pipeline to go. Without that bound, a burst whose answers arrive
one turn at a time (Deriv's, to a batch of withdrawals) sent a pipeline per turn and took a Redis connection for
each, until the pool had none left (``MaxConnectionsError``, the withdrawals' outcome unknown).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

MAX_IN_FLIGHT = 8


class CommandPipeline:
    def __init__(self, redis: Redis, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be positive")
        self._redis = redis
        self._max_in_flight = max_in_flight
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._sending = 0  # senders that may still take from the queue

    async def execute(self, *args: Any) -> Any:
        """Run one command (``GET key``, ``EVAL script ...``): its reply, or its error raised."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)  # after the callers already scheduled in this turn have queued theirs
        self._queued.append((args, reply))
        return await reply

    def _flush(self) -> None:
        """Start a sender for what is queued, unless ``max_in_flight`` are out: one of those takes it when done."""
        if not self._queued or self._sending >= self._max_in_flight:
            return
        self._sending += 1
        task = asyncio.get_running_loop().create_task(self._drain())
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _drain(self) -> None:
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                await self._send(queued)
        finally:
            # in the same step as its last look at the queue: a command queued after it schedules a flush that
            # finds a free slot (counting tasks instead would leave that command waiting for a done task)
            self._sending -= 1

    @property
    def in_flight(self) -> int:
        return self._sending

    async def _send(self, queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            if len(queued) == 1:  # alone: as a plain command, without a pipeline's bookkeeping
                replies: list[Any] = [await self._redis.execute_command(*queued[0][0])]  # type: ignore[no-untyped-call]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for args, _ in queued:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # the gateway is stopping: so are the callers
            for _, reply in queued:
                reply.cancel()
            raise
        except Exception as exc:  # the connection failed: every command's outcome is this error
            for _, reply in queued:
                if not reply.done():
                    reply.set_exception(exc)
            return
        for (_, reply), value in zip(queued, replies, strict=True):
            if reply.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)
