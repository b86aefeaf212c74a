"""The one Redis Streams consumer runtime every worker runs: consumer groups, at-least-once delivery, dead letters.

A :class:`StreamConsumer` reads one stream key as one member of one consumer group and hands each entry to an async
``handle(message)`` that the worker supplies. The rules it keeps (ARCHITECTURE §5):

- The group is created on start (``XGROUP CREATE … 0 MKSTREAM``: from the stream's start, so entries published
  before the first worker ever ran are handled too; ``BUSYGROUP`` means it exists already).
- Up to ``concurrency`` entries are handled at once, each in its own task. The reader asks ``XREADGROUP`` (blocking)
  or ``XAUTOCLAIM`` for as many entries as there are free slots (at most ``batch``) while the others are in flight,
  and waits for a slot when all are taken. Order between entries is not kept (nor assumed: §5); two entries of one
  transaction may run at once, which the steps allow: every status change re-reads the status under the
  transaction's row lock (``SELECT … FOR UPDATE``), intent is committed before each provider call, and a re-entrant
  state only repeats a call the provider deduplicates (the gateway by reference, Daraja by payout id).
- ``XACK`` only after ``handle`` returned: the handler does its own MySQL unit of work and commits first, so a crash
  anywhere before the acknowledgement leaves the entry pending, never lost. Entries that finish while an ``XACK`` is
  on the wire are acknowledged together by the next one.
- A handler that raises leaves its entry pending, and only that entry: the others go on. ``XAUTOCLAIM`` hands
  entries idle longer than ``claim_idle_ms`` (a failed one, or one whose consumer crashed) to this or any other
  consumer of the group, so ``claim_idle_ms`` must exceed the longest a handler may run (an entry reclaimed from
  this consumer while its handler still runs here is not started twice). The reader pauses (``backoff``) only on a
  Redis error, or in an outage: when the last ``outage_after`` handler runs all failed with no success between
  them; it then reads one entry per pause, so a failing provider is probed, not hammered, until one succeeds.
- Once an entry has been delivered ``max_deliveries`` times and still failed, it is copied to the dead-letter stream
  with the error, the original stream, id, group and delivery count, then acknowledged. An entry that cannot be
  decoded, or whose handler raises :class:`PoisonMessage`, goes there at once; so does a pending entry that was
  trimmed from the stream before anyone handled it. Nothing is dropped without a trace.
- Graceful stop: once ``stop`` is set no new entry is started, the handlers in flight run to completion and are
  acknowledged, entries read but not started are handed back (their idle time set so another consumer claims them
  at once), and ``run`` returns. Cancelling ``run`` cancels the handlers in flight, like a crash: their entries
  stay pending.

Delivery is at-least-once: handlers deduplicate (``ProcessedMessages`` keyed on :attr:`StreamMessage.dedupe_key`,
in the handler's own transaction). Each key is touched on its own, with no multi-key commands, so stream keys can
live on different Redis Cluster slots. The Redis client's ``socket_timeout`` must exceed ``block_ms``, and its
connection pool must allow the reader's blocking read beside ``concurrency`` handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
        concurrency: int = 32,
        batch: int | None = None,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        claim_every_ms: int | None = None,
        max_deliveries: int = 5,
        backoff: Callable[[int], float] | None = None,
        outage_after: int = 5,
    ) -> None:
        batch = concurrency if batch is None else batch
        if min(concurrency, batch, block_ms, claim_idle_ms, max_deliveries, outage_after) < 1:
            raise ValueError(
                "concurrency, batch, block_ms, claim_idle_ms, max_deliveries and outage_after must be positive"
            )
        self._redis = redis
        self.stream_key = stream_key
        self.group = group
        self.consumer_name = consumer_name
        self._handle = handle
        self._decode = decode if decode is not None else (decode_event if decode_events else None)
        self.dead_letter_key = dead_letter_key
        self.concurrency = concurrency
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = (claim_every_ms if claim_every_ms is not None else max(100, claim_idle_ms // 2)) / 1000
        self._max_deliveries = max_deliveries
        self._backoff = backoff or exponential_backoff()
        self._outage_after = outage_after
        self._failures = 0  # handler runs that raised since the last one that did not
        self._redis_errors = 0  # consecutive failed reads
        self._group_missing = False
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._unacked: list[str] = []
        self._acking = False
        self._log = log.bind(stream=stream_key, group=group, consumer=consumer_name)
        # for the worker's /metrics and /readyz (plain counts: nothing on the hot path but an increment)
        self.handled = 0  # entries handled and acknowledged
        self.failed = 0  # handler runs that raised (the entry stays pending, or is dead-lettered at its last try)
        self.dead_lettered = 0
        self.last_read_at: float | None = None  # time.monotonic() of the last read that returned (None: not yet)
        self.running = False

    @property
    def in_flight(self) -> int:
        """Entries whose handler is running now."""
        return len(self._in_flight)

    @property
    def _outage(self) -> bool:
        """Every one of the last ``outage_after`` handler runs failed: the provider behind them is probably down."""
        return self._failures >= self._outage_after

    # ---------------------------------------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; returns once every handler in flight has finished (and been acknowledged).
        Cancelling it cancels the handlers in flight too, as a crash would: their entries stay pending."""
        await self.ensure_group()
        self._log.info("consumer_started", concurrency=self.concurrency)
        self.running = True
        try:
            async with asyncio.TaskGroup() as handlers:
                handlers.create_task(self._wake_on(stop))
                while not stop.is_set():
                    try:
                        await self._step(stop, handlers)
                        self._redis_errors = 0
                    except RedisError as exc:
                        if _is_nogroup(exc):  # the stream (and its group) was deleted: create them again, go on
                            self._group_missing = True
                            continue
                        self._redis_errors += 1
                        self._log.warning("redis_error", error=repr(exc))
                        await self._pause(stop, self._redis_errors)
        finally:
            self.running = False
        self._log.info("consumer_stopped")

    def alive(self, now: float, *, stale_after_s: float) -> bool:
        """Consuming: the loop runs and Redis answers it, and it read within ``stale_after_s`` or every slot is
        taken (a full consumer waits for a handler, not for Redis)."""
        if not self.running or self._redis_errors:
            return False
        if len(self._in_flight) >= self.concurrency:
            return True
        return self.last_read_at is not None and now - self.last_read_at <= stale_after_s

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream_key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._slot_freed.set()  # a loop waiting for a free slot sees the stop at once

    async def _step(self, stop: asyncio.Event, handlers: asyncio.TaskGroup) -> None:
        if self._group_missing:
            await self.ensure_group()
            self._group_missing = False
        while len(self._in_flight) >= self.concurrency and not stop.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()
        if stop.is_set():
            return
        if self._outage:  # a provider outage: pause, then probe it with one entry at a time
            await self._pause(stop, self._failures - self._outage_after + 1)
            if stop.is_set():
                return
        count = 1 if self._outage else min(self._batch, self.concurrency - len(self._in_flight))
        if time.monotonic() >= self._next_claim_at:
            claimed = await self._claim_idle(count)
            self.last_read_at = time.monotonic()
            if claimed:
                await self._start(claimed, stop, handlers)
                return
            if stop.is_set():
                return
        reply = await self._redis.xreadgroup(
            self.group, self.consumer_name, {self.stream_key: ">"}, count=count, block=self._block_ms
        )
        self.last_read_at = time.monotonic()
        entries = [
            (_text(entry_id), raw, 1)
            for _, stream_entries in _stream_replies(reply)
            for entry_id, raw in stream_entries
        ]
        await self._start(entries, stop, handlers)

    async def _start(
        self,
        entries: Sequence[tuple[str, Mapping[Any, Any] | None, int]],
        stop: asyncio.Event,
        handlers: asyncio.TaskGroup,
    ) -> None:
        if stop.is_set():  # read while stopping (a blocking read that returned after the stop): hand them back
            await self._hand_back([entry_id for entry_id, _, _ in entries if entry_id not in self._in_flight])
            return
        for entry_id, raw, deliveries in entries:
            if entry_id in self._in_flight:
                # Reclaimed from ourselves: its handler is still running here (longer than claim_idle_ms); that run
                # acknowledges it, a second one at the same time would only race it.
                self._log.warning("reclaimed_own_entry_in_flight", stream_message_id=entry_id)
                continue
            task = handlers.create_task(self._run_one(entry_id, _as_fields(raw), deliveries))
            self._in_flight[entry_id] = task
            task.add_done_callback(functools.partial(self._finished, entry_id))

    def _finished(self, entry_id: str, _: asyncio.Task[None]) -> None:
        self._in_flight.pop(entry_id, None)
        self._slot_freed.set()

    async def _pause(self, stop: asyncio.Event, failures: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self._backoff(max(1, failures)))

    # ---------------------------------------------------------------------------------------------- one entry

    async def _run_one(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        """One entry's whole life in this consumer. Never raises (a raise would cancel the other handlers): an entry
        whose acknowledgement or dead-lettering failed stays pending, and ``XAUTOCLAIM`` brings it back."""
        with structlog.contextvars.bound_contextvars(
            stream_message_id=entry_id, transaction_id=fields.get("transaction_id") or None
        ):
            try:
                await self._deliver(entry_id, fields, deliveries)
            except Exception as exc:
                self._log.warning("acknowledgement_failed_stays_pending", error=repr(exc))

    async def _deliver(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        if deliveries > self._max_deliveries:
            # Delivered that often without an acknowledgement and without a failure seen here: its consumers
            # died while handling it (or were killed), so it is not tried yet again.
            await self._dead_letter(
                entry_id, fields, deliveries, f"delivered {deliveries} times without being acknowledged"
            )
            return
        event: TransactionEvent | None = None
        if self._decode is not None:
            try:
                event = self._decode(fields)
            except Exception as exc:
                await self._dead_letter(entry_id, fields, deliveries, f"undecodable entry: {exc!r}")
                return
        message = StreamMessage(stream=self.stream_key, id=entry_id, fields=fields, deliveries=deliveries, event=event)
        try:
            await self._handle(message)
        except PoisonMessage as exc:
            self._failures = 0  # the handler ran and judged the message: not an outage
            self.failed += 1
            await self._dead_letter(entry_id, fields, deliveries, f"poison message: {exc!r}")
            return
        except Exception as exc:
            self._failures += 1
            self.failed += 1
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
            return
        self._failures = 0
        await self._ack(entry_id)
        self.handled += 1
        self._log.debug("message_handled", deliveries=deliveries)

    async def _ack(self, entry_id: str) -> None:
        """Acknowledge a finished entry. Entries finishing while an ``XACK`` is on the wire are acknowledged together
        by the next one, by whichever handler is sending (one round trip for many entries under load)."""
        self._unacked.append(entry_id)
        if self._acking:
            return
        self._acking = True
        try:
            while self._unacked:
                ids, self._unacked = self._unacked, []
                await self._redis.xack(self.stream_key, self.group, *ids)
        finally:
            self._acking = False

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
        await self._ack(entry_id)
        self.dead_lettered += 1
        self._log.error("message_dead_lettered", stream_message_id=entry_id, deliveries=deliveries, error=reason)

    # ---------------------------------------------------------------------------------------------- reclaiming

    async def _claim_idle(self, count: int) -> list[tuple[str, Mapping[Any, Any] | None, int]]:
        """Take over up to ``count`` entries idle longer than ``claim_idle_ms`` (one page of ``XAUTOCLAIM``), with
        their delivery counts."""
        reply = await self._redis.xautoclaim(
            self.stream_key,
            self.group,
            self.consumer_name,
            min_idle_time=self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
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
