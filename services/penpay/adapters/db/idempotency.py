"""Do-it-once records: API idempotency keys (Stripe semantics, durable in MySQL) and processed stream messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import from_db, to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.tables import idempotency_keys, processed_messages
from penpay_domain.ids import IdempotencyKey, TransactionId
from penpay_domain.ports import IdempotencyRecord


class SqlIdempotencyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def _where(self, key: IdempotencyKey) -> sa.ColumnElement[bool]:
        return sa.and_(idempotency_keys.c.user_id == key.user_id, idempotency_keys.c.idem_key == key.key)

    async def begin(self, key: IdempotencyKey, request_hash: str, now: datetime) -> IdempotencyRecord | None:
        """Claim ``key``: None if this call claimed it, else the existing record (in flight or finished)."""
        inserted = await self._conn.execute(
            mysql.insert(idempotency_keys)
            .values(user_id=key.user_id, idem_key=key.key, request_hash=request_hash, created_at=to_db(now))
            .prefix_with("IGNORE")
        )
        if inserted.rowcount == 1:
            return None
        row = (await self._conn.execute(sa.select(idempotency_keys).where(self._where(key)))).one()
        return IdempotencyRecord(
            key=key,
            request_hash=str(row.request_hash),
            status_code=row.status_code,
            response_body=bytes(row.response_body) if row.response_body is not None else None,
            transaction_id=TransactionId(row.transaction_id) if row.transaction_id else None,
            created_at=from_db(row.created_at),
        )

    async def finish(
        self, key: IdempotencyKey, *, status_code: int, body: bytes, transaction_id: TransactionId | None
    ) -> None:
        await self._conn.execute(
            idempotency_keys.update()
            .where(self._where(key))
            .values(status_code=status_code, response_body=body, transaction_id=transaction_id)
        )

    async def release(self, key: IdempotencyKey) -> None:
        """Forget an in-flight claim whose request failed without effect, so the client may retry with the key."""
        await self._conn.execute(
            idempotency_keys.delete().where(self._where(key), idempotency_keys.c.status_code.is_(None))
        )

    async def purge_older_than(self, cutoff: datetime) -> int:
        result = await self._conn.execute(
            idempotency_keys.delete().where(idempotency_keys.c.created_at < to_db(cutoff))
        )
        return int(result.rowcount)


# built once (see adapters.db.repositories): every worker step runs them
_MARK = (
    mysql.insert(processed_messages)
    .values({c: sa.bindparam(c) for c in ("consumer_group", "message_key", "processed_at")})
    .prefix_with("IGNORE")
)
_SEEN = sa.select(processed_messages.c.message_key).where(
    processed_messages.c.consumer_group == sa.bindparam("b_group"),
    processed_messages.c.message_key == sa.bindparam("b_key"),
)
_SEEN_MANY = sa.select(processed_messages.c.message_key).where(
    processed_messages.c.consumer_group == sa.bindparam("b_group"),
    processed_messages.c.message_key.in_(sa.bindparam("b_keys", expanding=True)),
)


class SqlProcessedMessages:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark(self, consumer_group: str, message_key: str, now: datetime) -> bool:
        result = await self._conn.execute(
            _MARK, {"consumer_group": consumer_group, "message_key": message_key, "processed_at": to_db(now)}
        )
        return bool(result.rowcount == 1)

    async def seen(self, consumer_group: str, message_key: str) -> bool:
        found = await self._conn.scalar(_SEEN, {"b_group": consumer_group, "b_key": message_key})
        return found is not None

    async def seen_many(self, consumer_group: str, message_keys: Sequence[str]) -> set[str]:
        """Which of ``message_keys`` the group has processed (one statement)."""
        if not message_keys:
            return set()
        rows = await self._conn.execute(
            _SEEN_MANY, {"b_group": consumer_group, "b_keys": padded(sorted(set(message_keys)))}
        )
        return {str(key) for key in rows.scalars()}

    async def mark_many(self, consumer_group: str, message_keys: Sequence[str], now: datetime) -> int:
        """Record many messages as processed (one multi-row ``INSERT IGNORE``); returns how many were new."""
        at = to_db(now)
        keys = sorted(set(message_keys))
        rows = [{"consumer_group": consumer_group, "message_key": k, "processed_at": at} for k in keys]
        if not rows:
            return 0
        result = await self._conn.execute(_MARK, rows[0] if len(rows) == 1 else rows)
        return int(result.rowcount)
