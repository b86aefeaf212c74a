"""The transactional outbox: events written with the state change that caused them, published afterwards.

The relay claims unpublished rows with ``FOR UPDATE SKIP LOCKED`` so several relays can run side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.engine import to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.multirow import consecutive_ids_on, insert_returning_ids
from penpay.adapters.db.tables import outbox
from penpay.adapters.stream_codec import payload_json
from penpay.logging import get_logger
from penpay_domain.events import TransactionEvent
from penpay_domain.ports import Clock

log = get_logger(__name__)
MARK_LINGER_S = 0.05


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    event_type: str
    transaction_id: str | None
    payload: str


def outbox_rows(
    events: Sequence[TransactionEvent], now: datetime, *, carried: Collection[str] = ()
) -> list[dict[str, object]]:
    """The ``outbox`` rows of ``events`` (see :meth:`SqlOutbox.add`): one for each event a worker acts on, in order;
    none for the events no stream carries (``events.RECORDED_ONLY``), which the audit log records."""
    at = to_db(now)
    return [
        {
            "stream": event.stream,
            "event_type": event.name,
            "transaction_id": event.transaction_id,
            "payload": payload_json(event),
            "created_at": at,
            # carried by its committing step (``UnitOfWork.commit``): the relay never sends it
            "published_at": at if event.name in carried else None,
        }
        for event in events
        if event.is_work()
    ]


def numbered(events: Sequence[TransactionEvent], ids: Sequence[int]) -> list[TransactionEvent]:
    """``events`` with the ids of their :func:`outbox_rows` (``ids``, in order); an event with no row keeps none."""
    if len(ids) != sum(1 for event in events if event.is_work()):
        raise ValueError(f"{len(ids)} outbox ids for {len(events)} events")
    given = iter(ids)
    return [replace(event, event_id=next(given)) if event.is_work() else event for event in events]


class SqlOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self, events: Sequence[TransactionEvent], now: datetime, *, carried: Collection[str] = ()
    ) -> list[int]:
        """Insert the rows of the events a worker acts on (one statement where the server numbers a multi-row insert
        consecutively) and return their ids, in order (:func:`numbered` gives them to the events). Events named in
        ``carried`` are written already published (their committing step carries them on itself: see
        ``UnitOfWork.commit``), so the relay never sends them. Events no stream carries (``events.RECORDED_ONLY``)
        get no row: nothing would ever read it (the audit log records them)."""
        rows = outbox_rows(events, now, carried=carried)
        if not rows:
            return []
        return await insert_returning_ids(self._conn, "outbox", rows, consecutive=await consecutive_ids_on(self._conn))

    async def claim_unpublished(self, limit: int, *, older_than: datetime | None = None) -> list[OutboxRow]:
        stmt = sa.select(outbox).where(outbox.c.published_at.is_(None))
        if older_than is not None:
            stmt = stmt.where(outbox.c.created_at < to_db(older_than))
        stmt = stmt.order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True)
        rows = await self._conn.execute(stmt)
        return [OutboxRow(r.id, r.stream, r.event_type, r.transaction_id, r.payload) for r in rows]

    async def mark_published(self, ids: Sequence[int], now: datetime) -> None:
        if ids:
            await self._conn.execute(
                outbox.update().where(outbox.c.id.in_(padded(ids))).values(published_at=to_db(now))
            )


class PublishedMarks:
    """Stamps outbox rows published after their immediate publish, in the background and many per statement.

    ``add`` returns at once (a request never waits for the stamp); one task drains what accumulated with one UPDATE
    and one commit, and whatever arrives meanwhile goes in the next. The task first waits ``linger_s`` for more, so a
    process stamps at most ~1/``linger_s`` times a second however small its batches are (at a moderate rate every
    request or step is a batch of one, and stamping each on its own cost a round trip and a commit apiece). A stamp
    that fails or is lost in a crash only means the relay publishes those rows again after its ``min_age_s`` (5 s,
    far above the linger), under the same ``event_id``, and consumers deduplicate on it.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, *, linger_s: float = MARK_LINGER_S) -> None:
        self._engine = engine
        self._clock = clock
        self._linger_s = linger_s
        self._ids: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def add(self, ids: Sequence[int]) -> None:
        self._ids.extend(ids)
        if self._ids and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._drain(), name="outbox-marks")

    async def _drain(self) -> None:
        while self._ids:
            if self._linger_s:
                await asyncio.sleep(self._linger_s)
            ids, self._ids = self._ids, []
            try:
                async with self._engine.begin() as conn:
                    await SqlOutbox(conn).mark_published(ids, self._clock.now())
            except Exception as exc:  # the relay publishes them again; consumers deduplicate
                log.warning("outbox_mark_failed", count=len(ids), error=repr(exc))

    async def aclose(self) -> None:
        """Wait until everything added so far is stamped (or has failed to be)."""
        while self._task is not None and not self._task.done():
            await self._task
