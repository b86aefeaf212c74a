"""The one Redis Streams consumer runtime every worker runs: consumer groups, at-least-once delivery, dead letters.

A :class:`StreamConsumer` reads one stream key as one member of one consumer group and hands each entry to an async
``handle(message)`` that the worker supplies. The rules it keeps (ARCHITECTURE §5):

- The group is created on start (``XGROUP CREATE … 0 MKSTREAM``: from the stream's start, so entries published
  before the first worker ever ran are handled too; ``BUSYGROUP`` means it exists already).
- New entries come from a blocking ``XREADGROUP``, in batches, handled one at a time.
- ``XACK`` only after ``handle`` returned: the handler does its own MySQL unit of work and commits first, so a crash
  anywhere before the acknowledgement leaves the entry pending, never lost.
- A handler that raises leaves the entry pending. ``XAUTOCLAIM`` hands entries idle longer than ``claim_idle_ms``
  (a failed one, or one whose consumer crashed) to this or any other consumer of the group, so ``claim_idle_ms``
  must exceed the longest a handler may run. After a failure the consumer pauses (``backoff``) before it reads
  again, so a failing provider is not hammered.
- Once an entry has been delivered ``max_deliveries`` times and still failed, it is copied to the dead-letter stream
  with the error, the original stream, id, group and delivery count, then acknowledged. An entry that cannot be
  decoded, or whose handler raises :class:`PoisonMessage`, goes there at once; so does a pending entry that was
  trimmed from the stream before anyone handled it. Nothing is dropped without a trace.
- Graceful stop: once ``stop`` is set no new entry is started, the one in hand runs to completion, entries read but
  not started are handed back (their idle time set so another consumer claims them at once), and ``run`` returns.

Delivery is at-least-once: handlers deduplicate (``ProcessedMessages`` keyed on :attr:`StreamMessage.dedupe_key`,
in the handler's own transaction). Each key is touched on its own, with no multi-key commands, so stream keys can
live on different Redis Cluster slots. The Redis client's ``socket_timeout`` must exceed ``block_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from penpay.adapters import stream_codec
from penpay.logging import get_logger
from penpay_domain.events import TransactionEvent

log = get_logger(__name__)

Fields = Mapping[str, str]
Decoder = Callable[[Fields], TransactionEvent]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamMessage:
    """One stream entry as a handler sees it. ``event`` is the decoded domain event (None on streams read
    without a decoder); ``deliveries`` counts this delivery too (1 on the first)."""

    stream: str
    id: str
    fields: Fields
    deliveries: int
    event: TransactionEvent | None = None

    @property
    def transaction_id(self) -> str | None:
        if self.event is not None:
            return self.event.transaction_id
        return self.fields.get("transaction_id") or None

    @property
    def dedupe_key(self) -> str:
        """What identifies the message across republishing: the outbox ``event_id`` when it has one (the same event
        published right after commit and again by the relay has two entry ids but one event_id), else the entry."""
        event_id = self.fields.get("event_id")
        return f"event:{event_id}" if event_id else f"entry:{self.stream}:{self.id}"


Handler = Callable[[StreamMessage], Awaitable[None]]


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed (malformed, unknown reference): dead-letter it now
    rather than retrying it ``max_deliveries`` times."""


def exponential_backoff(base_s: float = 0.2, cap_s: float = 10.0) -> Callable[[int], float]:
    """Seconds to pause after the n-th consecutive failure: base * 2^(n-1), capped, with full jitter."""

    def delay(failures: int) -> float:
        ceiling = min(cap_s, base_s * 2 ** max(0, failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    return delay


def decode_event(fields: Fields) -> TransactionEvent:
    """The default decoder: the shared wire format of :mod:`penpay.adapters.stream_codec`."""
    raw: dict[bytes | str, bytes | str] = {key: value for key, value in fields.items()}  # noqa: C416 - widens
    return stream_codec.decode(raw)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_fields(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


class StreamConsumer:
    """One member of one consumer group on one stream key. See the module docstring for the delivery rules."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream_key: str,
        group: str,
        consumer_name: str,
        handle: Handler,
        dead_letter_key: str,
        decode: Decoder | None = None,
        decode_events: bool = True,
        batch: int = 10,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        claim_every_ms: int | None = None,
        max_deliveries: int = 5,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        if max_deliveries < 1 or batch < 1 or block_ms < 1 or claim_idle_ms < 1:
            raise ValueError("batch, block_ms, claim_idle_ms and max_deliveries must be positive")
        self._redis = redis
        self.stream_key = stream_key
        self.group = group
        self.consumer_name = consumer_name
        self._handle = handle
        self._decode = decode if decode is not None else (decode_event if decode_events else None)
        self.dead_letter_key = dead_letter_key
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = (claim_every_ms if claim_every_ms is not None else max(100, claim_idle_ms // 2)) / 1000
        self._max_deliveries = max_deliveries
        self._backoff = backoff or exponential_backoff()
        self._failures = 0
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0
        self._log = log.bind(stream=stream_key, group=group, consumer=consumer_name)

    # ---------------------------------------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; returns once the message in hand (if any) is finished."""
        await self.ensure_group()
        self._log.info("consumer_started")
        while not stop.is_set():
            try:
                await self._step(stop)
            except RedisError as exc:
                if _is_nogroup(exc):  # the stream (and its group) was deleted: start over
                    await self.ensure_group()
                    continue
                self._failures += 1
                self._log.warning("redis_error", error=repr(exc))
                await self._pause(stop)
        self._log.info("consumer_stopped")

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream_key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _step(self, stop: asyncio.Event) -> None:
        if time.monotonic() >= self._next_claim_at:
            claimed = await self._claim_idle()
            if claimed:
                await self._process(claimed, stop)
                return
        if stop.is_set():
            return
        reply = await self._redis.xreadgroup(
            self.group, self.consumer_name, {self.stream_key: ">"}, count=self._batch, block=self._block_ms
        )
        entries = [
            (_text(entry_id), raw) for _, stream_entries in _stream_replies(reply) for entry_id, raw in stream_entries
        ]
        await self._process([(entry_id, raw, 1) for entry_id, raw in entries], stop)

    async def _process(self, entries: Sequence[tuple[str, Mapping[Any, Any] | None, int]], stop: asyncio.Event) -> None:
        for index, (entry_id, raw, deliveries) in enumerate(entries):
            if stop.is_set():
                await self._hand_back([e[0] for e in entries[index:]])
                return
            failed = await self._deliver(entry_id, _as_fields(raw), deliveries)
            if failed:
                await self._pause(stop)
            else:
                self._failures = 0

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self._backoff(max(1, self._failures)))

    # ---------------------------------------------------------------------------------------------- one entry

    async def _deliver(self, entry_id: str, fields: dict[str, str], deliveries: int) -> bool:
        """Handle one entry; True if it failed (and stays pending or went to the dead letter after failing)."""
        with structlog.contextvars.bound_contextvars(
            stream_message_id=entry_id, transaction_id=fields.get("transaction_id") or None
        ):
            if deliveries > self._max_deliveries:
                # Delivered that often without an acknowledgement and without a failure seen here: its consumers
                # died while handling it (or were killed), so it is not tried yet again.
                await self._dead_letter(
                    entry_id, fields, deliveries, f"delivered {deliveries} times without being acknowledged"
                )
                return False
            event: TransactionEvent | None = None
            if self._decode is not None:
                try:
                    event = self._decode(fields)
                except Exception as exc:
                    await self._dead_letter(entry_id, fields, deliveries, f"undecodable entry: {exc!r}")
                    return False
            message = StreamMessage(
                stream=self.stream_key, id=entry_id, fields=fields, deliveries=deliveries, event=event
            )
            try:
                await self._handle(message)
            except PoisonMessage as exc:
                await self._dead_letter(entry_id, fields, deliveries, f"poison message: {exc!r}")
                return False
            except Exception as exc:
                self._failures += 1
                if deliveries >= self._max_deliveries:
                    self._log.error("handler_failed_dead_lettering", deliveries=deliveries, error=repr(exc))
                    await self._dead_letter(entry_id, fields, deliveries, repr(exc))
                else:
                    self._log.warning(
                        "handler_failed_will_retry",
                        deliveries=deliveries,
                        error=repr(exc),
                        retry_after_ms=self._claim_idle_ms,
                    )
                return True
            await self._redis.xack(self.stream_key, self.group, entry_id)
            self._log.debug("message_handled", deliveries=deliveries)
            return False

    async def _dead_letter(self, entry_id: str, fields: Mapping[str, str], deliveries: int, reason: str) -> None:
        """Copy the entry with why it failed to the dead-letter stream, then acknowledge it. A crash in between
        dead-letters it twice (harmless), never zero times."""
        record = {
            **fields,
            "original_stream": self.stream_key,
            "original_id": entry_id,
            "consumer_group": self.group,
            "deliveries": str(deliveries),
            "error": reason[:2000],
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }
        await self._redis.xadd(self.dead_letter_key, record)  # type: ignore[arg-type]
        await self._redis.xack(self.stream_key, self.group, entry_id)
        self._log.error("message_dead_lettered", stream_message_id=entry_id, deliveries=deliveries, error=reason)

    # ---------------------------------------------------------------------------------------------- reclaiming

    async def _claim_idle(self) -> list[tuple[str, Mapping[Any, Any] | None, int]]:
        """Take over entries idle longer than ``claim_idle_ms`` (one page of ``XAUTOCLAIM``), with their counts."""
        reply = await self._redis.xautoclaim(
            self.stream_key,
            self.group,
            self.consumer_name,
            min_idle_time=self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=self._batch,
        )
        cursor, claimed = _text(reply[0]), list(reply[1])
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        self._claim_cursor = cursor
        if cursor == "0-0":  # the whole pending list was scanned: wait before the next sweep
            self._next_claim_at = time.monotonic() + self._claim_every_s
        for entry_id in deleted:  # trimmed before anyone handled them: XAUTOCLAIM drops them from the PEL
            await self._dead_letter(entry_id, {}, 0, "entry was trimmed from the stream while pending")
        entries = [(_text(entry_id), raw) for entry_id, raw in claimed if raw is not None]
        if not entries:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in entries])
        self._log.info("messages_reclaimed", ids=[e for e, _ in entries])
        return [(entry_id, raw, counts.get(entry_id, 1)) for entry_id, raw in entries]

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.stream_key, self.group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _hand_back(self, ids: Sequence[str]) -> None:
        """Entries read but not started at shutdown: mark them idle long enough that the group's other consumers
        claim them on their next sweep (``JUSTID`` keeps the delivery count as it is)."""
        if not ids:
            return
        await self._redis.xclaim(
            self.stream_key,
            self.group,
            self.consumer_name,
            min_idle_time=0,
            message_ids=list(ids),
            idle=self._claim_idle_ms,
            justid=True,
        )
        self._log.info("messages_handed_back", ids=list(ids))


def _stream_replies(reply: Any) -> list[tuple[Any, list[tuple[Any, Mapping[Any, Any] | None]]]]:
    """``XREADGROUP``'s answer as [(stream, [(id, fields)])], whichever RESP version the client speaks."""
    if not reply:
        return []
    if isinstance(reply, Mapping):  # RESP3: {stream: [[id, fields], ...]}
        return [(stream, [(e[0], e[1]) for e in entries]) for stream, entries in reply.items()]
    return [(stream, [(e[0], e[1]) for e in entries]) for stream, entries in reply]


def _is_nogroup(exc: RedisError) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")
