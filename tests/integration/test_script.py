"""Several statements in one round trip (``adapters.db.script``) against the real MariaDB: each statement's result
in order, a failing statement raised as SQLAlchemy raises it with the rest not run, the connection usable after."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.script import run_script

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as c:
        await c.exec_driver_sql("DROP TEMPORARY TABLE IF EXISTS script_t")
        await c.exec_driver_sql(
            "CREATE TEMPORARY TABLE script_t (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(60) NOT NULL UNIQUE, "
            "n INT NOT NULL, CONSTRAINT n_small CHECK (n < 100))"
        )
        await c.commit()
        yield c
        await c.rollback()
        await c.exec_driver_sql("DROP TEMPORARY TABLE script_t")


async def _names(conn: AsyncConnection) -> list[tuple[str, int]]:
    rows = await conn.exec_driver_sql("SELECT name, n FROM script_t ORDER BY id")
    return [(str(r[0]), int(r[1])) for r in rows]


async def test_each_statement_answers_in_order(conn: AsyncConnection) -> None:
    results = await run_script(
        conn,
        [
            ("INSERT INTO script_t (name, n) VALUES (%s, %s), (%s, %s)", ["a", 1, "b", 2]),
            ("UPDATE script_t SET n = n + %s WHERE name IN (%s, %s)", [10, "a", "b"]),
            ("SELECT name, n FROM script_t WHERE n > %s ORDER BY name", [5]),
            ("INSERT INTO script_t (name, n) VALUES (%s, %s)", ["it's %s; DROP TABLE script_t", 3]),
        ],
    )

    assert [r.rowcount for r in results[:2]] == [2, 2]
    assert [tuple(row) for row in results[2].rows] == [("a", 11), ("b", 12)]
    assert results[0].lastrowid > 0
    assert results[3].lastrowid == results[0].lastrowid + 2  # the first of a multi-row insert's ids, then the next
    assert await _names(conn) == [("a", 11), ("b", 12), ("it's %s; DROP TABLE script_t", 3)]  # values stay values


async def test_a_failing_statement_raises_as_sqlalchemy_would_and_stops_the_script(conn: AsyncConnection) -> None:
    await conn.exec_driver_sql("INSERT INTO script_t (name, n) VALUES ('taken', 1)")

    with pytest.raises(IntegrityError) as caught:
        await run_script(
            conn,
            [
                ("INSERT INTO script_t (name, n) VALUES (%s, %s)", ["first", 1]),
                ("INSERT INTO script_t (name, n) VALUES (%s, %s)", ["taken", 2]),
                ("INSERT INTO script_t (name, n) VALUES (%s, %s)", ["never", 3]),
            ],
        )

    assert caught.value.orig is not None and caught.value.orig.args[0] == 1062  # ER_DUP_ENTRY, as the driver said
    assert caught.value.params == ("taken", 2)  # the statement that failed, not the whole script
    # the failed statement undid only itself; the one after it never ran; the connection goes on
    assert await _names(conn) == [("taken", 1), ("first", 1)]
    with pytest.raises(OperationalError) as check:
        await run_script(conn, [("UPDATE script_t SET n = n + %s WHERE name = %s", [500, "first"])])
    assert check.value.orig is not None and check.value.orig.args[0] in (4025, 3819)  # the CHECK constraint
    assert await _names(conn) == [("taken", 1), ("first", 1)]


async def test_a_listener_sees_one_statement_per_script(conn: AsyncConnection, engine: AsyncEngine) -> None:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        await run_script(conn, [("SELECT %s", [1]), ("SELECT %s", [2])])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
    assert seen == ["SELECT %s;\nSELECT %s"]


async def test_nothing_to_run_sends_nothing(conn: AsyncConnection) -> None:
    assert await run_script(conn, []) == []


async def test_a_connection_the_server_dropped_is_invalidated_not_pooled(engine: AsyncEngine) -> None:
    async with engine.connect() as victim:
        thread = int((await victim.exec_driver_sql("SELECT CONNECTION_ID()")).scalar_one())
        async with engine.connect() as admin:
            await admin.exec_driver_sql(f"KILL CONNECTION {thread}")
        with pytest.raises(OperationalError) as caught:
            await run_script(victim, [("SELECT %s", [1]), ("SELECT %s", [2])])
        assert caught.value.connection_invalidated
        assert victim.invalidated
    async with engine.connect() as fresh:  # the pool hands out a live connection
        assert (await run_script(fresh, [("SELECT CONNECTION_ID()", [])]))[0].rows[0][0] != thread


def _hard_texts() -> list[str]:
    """Every ASCII character alone and after a backslash, quoting tricks, and seeded random unicode (astral too)."""
    texts = [chr(c) for c in range(128)] + ["\\" + chr(c) for c in range(128)]
    texts += ["", "\\", "\\\\", "'", "''", "\\'", "'\\", "x'; DROP TABLE script_t; --", '"', '\\"', "%s", "%%", "ü€𝄞"]
    rng = random.Random(6)
    pool = "\\'\"\0\n\r\x1a%ab é€𝄞\t"
    texts += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    return texts


async def test_every_value_reaches_the_server_exactly_as_it_was(conn: AsyncConnection) -> None:
    texts = _hard_texts()
    when = [datetime(2026, 12, 1, 9, 30), datetime(2026, 12, 1, 9, 30, 0, 7), datetime(1, 1, 1)]  # noqa: DTZ001 - naive
    values: list[Any] = [*texts, *when, 0, -(2**63), 2**64 - 1, None, Decimal("129.123456"), True, b"\x00\x27\x5c"]
    casts = ["%s"] * len(texts) + ["CAST(%s AS DATETIME(6))"] * len(when) + ["%s"] * 7
    [result] = await run_script(conn, [(f"SELECT {', '.join(casts)}", values)])
    row = list(result.rows[0])
    assert row[: len(texts)] == texts
    assert row[len(texts) : len(texts) + 3] == when
    assert row[len(texts) + 3 :] == [0, -(2**63), 2**64 - 1, None, Decimal("129.123456"), 1, b"\x00\x27\x5c"]


async def test_with_no_backslash_escapes_values_still_arrive_exactly(conn: AsyncConnection) -> None:
    await conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    try:
        texts = ["a\\b", "it's", "\\'", "x\\"]
        [result] = await run_script(conn, [(f"SELECT {', '.join(['%s'] * len(texts))}", texts)])
        assert list(result.rows[0]) == texts
    finally:
        await conn.exec_driver_sql("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
