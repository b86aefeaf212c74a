"""Batched statements keep a few shapes, so the worker's prepared statements are prepared once and reused: a batch
INSERT is one bulk execution of the one-row statement (``multirow.insert_rows``), an ``IN`` list is padded to a
power of two (``in_lists.padded``), and statements whose shape follows the batch go as text, never prepared to run
once (``multirow.insert_returning_ids``). Counted on the server, per session."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import create_engine, to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.multirow import insert_returning_ids, insert_rows

pytestmark = pytest.mark.integration

COUNTERS = ("Com_stmt_prepare", "Com_stmt_execute", "Com_insert")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[tuple[AsyncConnection, str]]:
    engine = create_engine(database_url, pool_size=1, statement_cache=64)  # as the worker's
    table = f"shapes_{secrets.token_hex(4)}"
    async with engine.connect() as connection:
        await connection.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL,"
            " at DATETIME(6) NOT NULL, note TEXT NULL, amount BIGINT NOT NULL)"
        )
        try:
            yield connection, table
        finally:
            await connection.rollback()
            await connection.exec_driver_sql(f"DROP TABLE {table}")
    await engine.dispose()


async def counters(conn: AsyncConnection) -> dict[str, int]:
    names = ", ".join(f"'{n}'" for n in COUNTERS)
    rows = (await conn.exec_driver_sql(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})")).all()
    return {str(name): int(value) for name, value in rows}


def rows(n: int, *, notes: bool = True) -> list[dict[str, object]]:
    return [
        {
            "name": f"row-{i}",
            "at": to_db(datetime(2026, 12, 7, 6, 0, i % 60, i, tzinfo=UTC)),
            "note": "x" if notes else None,
            "amount": i,
        }
        for i in range(n)
    ]


async def test_batches_of_any_size_are_inserted_by_one_statement_prepared_once(
    conn: tuple[AsyncConnection, str],
) -> None:
    connection, table = conn
    await insert_rows(connection, table, rows(3))
    before = await counters(connection)
    for n in (1, 7, 100, 256):
        await insert_rows(connection, table, rows(n))
    after = await counters(connection)
    delta = {name: after[name] - before[name] for name in COUNTERS}
    # each batch one execution, and one for the SHOW that reads the counters (prepared too, and cached)
    assert delta["Com_stmt_prepare"] == 0 and delta["Com_stmt_execute"] == 4 + 1
    stored = (await connection.exec_driver_sql(f"SELECT COUNT(*), SUM(amount) FROM {table}")).one()
    assert tuple(stored) == (3 + 1 + 7 + 100 + 256, 3 + 0 + 21 + 4950 + 32640)


async def test_a_batch_the_bulk_protocol_cannot_bind_still_arrives_whole(conn: tuple[AsyncConnection, str]) -> None:
    connection, table = conn
    await insert_rows(connection, table, rows(5, notes=False))  # a column NULL in every row
    notes = (await connection.exec_driver_sql(f"SELECT COUNT(*), COUNT(note) FROM {table}")).one()
    assert tuple(notes) == (5, 0)


async def test_ids_come_back_in_order_from_one_unprepared_statement(conn: tuple[AsyncConnection, str]) -> None:
    connection, table = conn
    before = await counters(connection)
    ids = await insert_returning_ids(connection, table, rows(5), consecutive=True)
    more = await insert_returning_ids(connection, table, rows(3), consecutive=False)
    after = await counters(connection)
    assert after["Com_stmt_prepare"] == before["Com_stmt_prepare"]
    stored = (await connection.exec_driver_sql(f"SELECT id, name FROM {table} ORDER BY id")).all()
    assert [r.id for r in stored] == ids + more
    assert [r.name for r in stored] == [f"row-{i}" for i in range(5)] + [f"row-{i}" for i in range(3)]


async def test_padded_in_lists_share_a_prepared_statement_and_select_the_same_rows(
    conn: tuple[AsyncConnection, str],
) -> None:
    connection, table = conn
    await insert_rows(connection, table, rows(40))
    query = sa.text(f"SELECT name FROM {table} WHERE name IN :names ORDER BY id").bindparams(
        sa.bindparam("names", expanding=True)
    )
    wanted = [f"row-{i}" for i in (1, 2, 3, 5, 8)]
    first = (await connection.execute(query, {"names": padded(wanted)})).scalars().all()
    before = await counters(connection)
    for size in (6, 7, 8):  # all padded to 8
        names = [f"row-{i}" for i in range(size)]
        assert (await connection.execute(query, {"names": padded(names)})).scalars().all() == names
    after = await counters(connection)
    assert first == wanted
    assert after["Com_stmt_prepare"] == before["Com_stmt_prepare"]
