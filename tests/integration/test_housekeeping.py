"""The housekeeping pass against the real MariaDB: expired idempotency keys, processed-message records and published
outbox rows go, a chunk at a time; anything younger, and an outbox row not yet published however old, stays."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db.housekeeping import SqlExpiredRows
from penpay.adapters.db.tables import idempotency_keys, outbox, processed_messages, withdrawal_codes
from penpay.service_layer.housekeeping import Retention, tidy

pytestmark = pytest.mark.integration

NOW = datetime(2002, 6, 1, 12, tzinfo=UTC)  # long ago: no other test's rows are this old
OLD = NOW - timedelta(days=30)
YOUNG = NOW - timedelta(hours=1)


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


async def _seed(engine: AsyncEngine, tag: str) -> None:
    async with engine.begin() as conn:
        for age, n in ((OLD, 3), (YOUNG, 2)):
            await conn.execute(
                idempotency_keys.insert(),
                [
                    {
                        "user_id": f"hk-{tag}",
                        "idem_key": f"{age:%s}-{i}",
                        "request_hash": "h",
                        "created_at": _naive(age),
                    }
                    for i in range(n)
                ],
            )
            await conn.execute(
                processed_messages.insert(),
                [
                    {"consumer_group": f"hk-{tag}", "message_key": f"{age:%s}-{i}", "processed_at": _naive(age)}
                    for i in range(n)
                ],
            )
            await conn.execute(
                outbox.insert(),
                [
                    {
                        "stream": f"hk-{tag}",
                        "event_type": "e",
                        "payload": "{}",
                        "created_at": _naive(age),
                        "published_at": _naive(age),
                    }
                    for _ in range(n)
                ],
            )
        await conn.execute(  # never published: the relay's, whatever its age
            outbox.insert().values(
                stream=f"hk-{tag}", event_type="e", payload="{}", created_at=_naive(OLD), published_at=None
            )
        )


async def _left(engine: AsyncEngine, tag: str) -> tuple[int, int, int, int]:
    async with engine.connect() as conn:

        async def count(table: sa.Table, column: sa.Column[str], *where: sa.ColumnElement[bool]) -> int:
            found = await conn.scalar(
                sa.select(sa.func.count()).select_from(table).where(column == f"hk-{tag}", *where)
            )
            return int(found or 0)

        return (
            await count(idempotency_keys, idempotency_keys.c.user_id),
            await count(processed_messages, processed_messages.c.consumer_group),
            await count(outbox, outbox.c.stream, outbox.c.published_at.is_not(None)),
            await count(outbox, outbox.c.stream, outbox.c.published_at.is_(None)),
        )


async def test_expired_rows_go_a_chunk_at_a_time_and_the_rest_stays(engine: AsyncEngine) -> None:
    tag = secrets.token_hex(4)
    await _seed(engine, tag)
    rows = SqlExpiredRows(engine)
    retention = Retention(dedupe=timedelta(days=7), outbox=timedelta(days=7))

    first = await tidy(rows, NOW, retention, chunk=2)
    assert first == {"idempotency_keys": 2, "processed_messages": 2, "published_outbox": 2}
    assert await _left(engine, tag) == (3, 3, 3, 1)

    await tidy(rows, NOW, retention, chunk=2)
    assert await _left(engine, tag) == (2, 2, 2, 1)  # the young ones and the unpublished row
    assert await tidy(rows, NOW, retention, chunk=2) == {}  # nothing expired is left


async def test_idempotency_keys_expire_after_a_day_whatever_the_other_retentions(engine: AsyncEngine) -> None:
    tag = secrets.token_hex(4)
    await _seed(engine, tag)
    long_kept = Retention(dedupe=timedelta(days=365 * 100), outbox=timedelta(days=365 * 100))

    await tidy(SqlExpiredRows(engine), NOW + timedelta(hours=24), long_kept)  # the young keys are 25 h old then
    assert await _left(engine, tag) == (0, 5, 5, 1)  # 24 h for keys; the other rows kept as configured


async def test_a_withdrawal_code_left_behind_goes_after_a_day(engine: AsyncEngine) -> None:
    old, young = (f"HK{secrets.token_hex(12).upper()}" for _ in range(2))
    async with engine.begin() as conn:
        await conn.execute(
            withdrawal_codes.insert(),
            [
                {"transaction_id": old, "code_ciphertext": b"sealed", "created_at": _naive(NOW - timedelta(hours=25))},
                {"transaction_id": young, "code_ciphertext": b"sealed", "created_at": _naive(YOUNG)},
            ],
        )
    done = await tidy(SqlExpiredRows(engine), NOW, Retention())
    assert done.get("withdrawal_codes") == 1
    async with engine.connect() as conn:
        left = (
            (
                await conn.execute(
                    sa.select(withdrawal_codes.c.transaction_id).where(
                        withdrawal_codes.c.transaction_id.in_([old, young])
                    )
                )
            )
            .scalars()
            .all()
        )
    assert left == [young]
