"""Redis Streams publisher (``ports.EventPublisher``): the immediate publish right after a commit.

Entries use the one wire format of ``adapters.stream_codec`` (``event_id`` = the outbox row id, ``type``,
``transaction_id``, ``payload``) on ``{stream_prefix}:{event.stream}``, trimmed approximately to ``maxlen``, all in one
pipelined round trip with a timeout. After the XADDs succeed, ``mark_published`` (when given) stamps the outbox rows
so the relay does not send them again; if that stamp fails, the relay republishes under the same ``event_id`` and
consumers deduplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from penpay.adapters.stream_codec import encode, stream_key
from penpay.logging import get_logger
from penpay_domain import ports
from penpay_domain.events import TransactionEvent

DEFAULT_MAXLEN = 1_000_000
MPESA_CALLBACKS_STREAM = "mpesa_callbacks"
MarkPublished = Callable[[Sequence[int]], Awaitable[None]]
log = get_logger(__name__)


class RedisStreamPublisher:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        maxlen: int = DEFAULT_MAXLEN,
        timeout_s: float = 5.0,
        mark_published: MarkPublished | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._maxlen = maxlen
        self._timeout_s = timeout_s
        self._mark = mark_published

    def key(self, stream: str) -> str:
        return stream_key(self._prefix, stream)

    async def publish(self, events: Sequence[TransactionEvent]) -> None:
        persisted = [e for e in events if e.event_id is not None and e.is_work()]  # the others go on no stream
        if not persisted:
            return
        pipe = self._client.pipeline(transaction=False)
        for event in persisted:
            fields: dict[Any, Any] = encode(event)
            pipe.xadd(self.key(event.stream), fields, maxlen=self._maxlen, approximate=True)
        async with asyncio.timeout(self._timeout_s):
            await pipe.execute()
        if self._mark is not None:
            try:
                await self._mark([e.event_id for e in persisted if e.event_id is not None])
            except Exception:  # the relay will publish them again; consumers deduplicate on event_id
                log.warning("could not mark outbox rows published", exc_info=True)

    async def add_many(self, stream: str, messages: Sequence[Mapping[str, str | int]]) -> list[str]:
        """Messages with the given fields (e.g. stored callbacks' ids, for the callback worker), in order, in one
        pipelined round trip; their stream ids."""
        if not messages:
            return []
        pipe = self._client.pipeline(transaction=False)
        for fields in messages:
            entry: dict[Any, Any] = {k: str(v) for k, v in fields.items()}
            pipe.xadd(self.key(stream), entry, maxlen=self._maxlen, approximate=True)
        async with asyncio.timeout(self._timeout_s):
            ids = await pipe.execute()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


_: type[ports.EventPublisher] = RedisStreamPublisher
