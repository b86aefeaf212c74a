"""The SQL side of ``service_layer.housekeeping``: each kind of expired row deleted by its age's index, a chunk at a
time, each chunk its own transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db.engine import to_db
from penpay.service_layer.housekeeping import ExpiredRows, Expiring

# each by an index on its age: ix_idempotency_keys_created, ix_processed_messages_processed_at, ix_outbox_unpublished
_DELETE = {
    Expiring.IDEMPOTENCY_KEYS: "DELETE FROM idempotency_keys WHERE created_at < %s LIMIT %s",
    Expiring.PROCESSED_MESSAGES: "DELETE FROM processed_messages WHERE processed_at < %s LIMIT %s",
    Expiring.PUBLISHED_OUTBOX: "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < %s LIMIT %s",
    # no index: the table holds only the codes of debits in flight
    Expiring.WITHDRAWAL_CODES: "DELETE FROM withdrawal_codes WHERE created_at < %s LIMIT %s",
}


class SqlExpiredRows:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def delete(self, what: Expiring, *, before: datetime, limit: int) -> int:
        async with self._engine.begin() as conn:
            result = await conn.exec_driver_sql(_DELETE[what], (to_db(before), limit))
            return int(result.rowcount)


def _conforms(engine: AsyncEngine) -> ExpiredRows:
    return SqlExpiredRows(engine)  # mypy checks the protocol
