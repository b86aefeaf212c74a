"""The pool's reset on return: a connection that committed goes back without a ROLLBACK round trip, and one left
inside a transaction is rolled back before anyone else gets it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.engine import begin, create_engine, release
from penpay.adapters.db.script import run_script

pytestmark = pytest.mark.integration


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[tuple[AsyncEngine, str]]:
    engine = create_engine(database_url, pool_size=1)
    table = f"reset_probe_{secrets.token_hex(4)}"
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"CREATE TABLE {table} (a INT PRIMARY KEY)")
    yield engine, table
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP TABLE {table}")
    await engine.dispose()


async def _session_rollbacks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        row = (await conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()
        return int(row[1])


async def test_a_committed_unit_of_work_returns_without_a_rollback(one_connection: tuple[AsyncEngine, str]) -> None:
    engine, table = one_connection
    before = await _session_rollbacks(engine)  # the pool's one connection, every time (pool_size=1, no overflow used)
    for i in range(5):
        conn = await begin(engine)
        await conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({i})")
        await conn.commit()
        await release(conn, committed=True)

    # reading the counter is a unit of work of its own (autobegun, rolled back by SQLAlchemy at close): one each
    assert await _session_rollbacks(engine) - before == 1


async def test_a_connection_left_inside_a_transaction_is_rolled_back(one_connection: tuple[AsyncEngine, str]) -> None:
    engine, table = one_connection
    conn = await engine.connect()
    raw = await conn.get_raw_connection()
    cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
    await cursor.execute(f"INSERT INTO {table} VALUES (42)")
    await conn.close()

    async with engine.connect() as again:  # the same connection (pool_size=1)
        count = (await again.exec_driver_sql(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    assert count == 0


async def _session_counter(conn: AsyncConnection, name: str) -> int:
    row = (await conn.exec_driver_sql(f"SHOW SESSION STATUS LIKE '{name}'")).one()
    return int(row[1])


@pytest.mark.parametrize(("cache", "prepared"), [(64, True), (0, False)])
async def test_statements_with_values_run_prepared_unless_the_cache_is_off(
    database_url: str, cache: int, prepared: bool
) -> None:
    engine = create_engine(database_url, pool_size=1, statement_cache=cache)
    try:
        async with engine.connect() as conn:
            first = await _session_counter(conn, "Com_stmt_execute")
            before = await _session_counter(conn, "Com_stmt_execute")
            itself = before - first  # the SHOW STATUS may be a prepared statement too
            for i in range(3):
                found = (await conn.execute(sa.text("SELECT :n + 1"), {"n": i})).scalar_one()
                assert found == i + 1  # the same answer either way
            executed = await _session_counter(conn, "Com_stmt_execute") - before - itself
            scripted = await _session_counter(conn, "Com_stmt_prepare")
            await run_script(conn, [("SELECT %s", [1]), ("SELECT %s", [2])])  # a script always goes as text
            assert await _session_counter(conn, "Com_stmt_prepare") == scripted
    finally:
        await engine.dispose()
    assert executed == (3 if prepared else 0)
