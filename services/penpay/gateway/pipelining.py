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
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis


class CommandPipeline:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """Run one command (``GET key``, ``EVAL script ...``): its reply, or its error raised."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)  # after the callers already scheduled in this turn have queued theirs
        self._queued.append((args, reply))
        return await reply

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(queued))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

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
