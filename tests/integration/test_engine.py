"""The pool's reset on return: a connection that committed goes back without a ROLLBACK round trip, and one left
inside a transaction is rolled back before anyone else gets it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db.engine import begin, create_engine, release

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
