"""The transactional outbox: events written with the state change that caused them, published afterwards.

The relay claims unpublished rows with ``FOR UPDATE SKIP LOCKED`` so several relays can run side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import to_db
from penpay.adapters.db.tables import outbox
from penpay.adapters.stream_codec import payload_json
from penpay_domain.events import TransactionEvent


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    event_type: str
    transaction_id: str | None
    payload: str


class SqlOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, events: Sequence[TransactionEvent], now: datetime) -> list[int]:
        ids = []
        for event in events:
            result = await self._conn.execute(
                outbox.insert().values(
                    stream=event.stream,
                    event_type=event.name,
                    transaction_id=event.transaction_id,
                    payload=payload_json(event),
                    created_at=to_db(now),
                )
            )
            key = result.inserted_primary_key
            if key is None:
                raise RuntimeError("the outbox insert returned no id")
            ids.append(int(key[0]))
        return ids

    async def claim_unpublished(self, limit: int, *, older_than: datetime | None = None) -> list[OutboxRow]:
        stmt = sa.select(outbox).where(outbox.c.published_at.is_(None))
        if older_than is not None:
            stmt = stmt.where(outbox.c.created_at < to_db(older_than))
        stmt = stmt.order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True)
        rows = await self._conn.execute(stmt)
        return [OutboxRow(r.id, r.stream, r.event_type, r.transaction_id, r.payload) for r in rows]

    async def mark_published(self, ids: Sequence[int], now: datetime) -> None:
        if ids:
            await self._conn.execute(outbox.update().where(outbox.c.id.in_(list(ids))).values(published_at=to_db(now)))
