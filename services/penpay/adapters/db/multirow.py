"""Multi-row statements for the batched paths (deposit and callback intake): one INSERT for many rows, sent to the
driver as written (``exec_driver_sql``), since SQLAlchemy's compiler would spend more time building a statement of
a few thousand values than MySQL takes to run it. Table and column names come from ``adapters.db.tables``; every
value travels as a bound parameter.

AUTO_INCREMENT ids: a multi-row INSERT's rows get consecutive ids, starting at the reported last insert id, when
``innodb_autoinc_lock_mode`` is 0 or 1 (MariaDB's default); with 2 (MySQL 8's default) they may interleave with other
sessions' ids, so callers that need the ids insert row by row there (:func:`consecutive_ids_on` tells which).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.script import run_script


def marks(n: int, width: int = 1) -> str:
    """``%s, %s`` (``width`` 1) or ``(%s, %s), (%s, %s)``: placeholders for ``n`` values or rows."""
    one = "%s" if width == 1 else "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([one] * n)


def insert_statement(table: str, rows: Sequence[dict[str, Any]]) -> tuple[str, tuple[Any, ...]]:
    """One INSERT of ``rows`` (all with the same keys) and its values."""
    columns = list(rows[0])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks(len(rows), len(columns))}",  # noqa: S608
        tuple(row[c] for row in rows for c in columns),
    )


async def insert_rows(conn: AsyncConnection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) in one round trip, as ``executemany`` of the one-row INSERT.

    On MariaDB the driver sends that as one ``COM_STMT_BULK_EXECUTE`` (every row bound in binary) of a statement
    prepared once per connection: its shape does not depend on how many rows a batch has. A multi-row INSERT's
    does, so with the engine's statement cache most batches prepared a new statement (one more round trip, whose
    answer describes every placeholder) to run it once and evict it later. Rows the bulk protocol cannot bind (a
    column NULL in every row) and servers without it (MySQL) get one multi-row INSERT in text instead."""
    columns = list(rows[0])
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(len(columns))})"  # noqa: S608
    await conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])


async def insert_returning_ids(
    conn: AsyncConnection, table: str, rows: Sequence[dict[str, Any]], *, consecutive: bool
) -> list[int]:
    """Insert ``rows`` and return their AUTO_INCREMENT ids, in order: one round trip, as text (a script: a statement
    whose shape follows the batch's size is not worth preparing, and the ids come from each statement's result)."""
    results = await run_script(conn, id_statements(table, rows, consecutive=consecutive))
    return ids_of([r.lastrowid for r in results], len(rows), consecutive=consecutive)


def id_statements(
    table: str, rows: Sequence[dict[str, Any]], *, consecutive: bool
) -> list[tuple[str, tuple[Any, ...]]]:
    """:func:`insert_returning_ids` as statements for a script (``adapters.db.script``): one multi-row INSERT where
    the server numbers it consecutively, else one per row; :func:`ids_of` reads the ids from their results."""
    if not rows:
        return []
    return [insert_statement(table, rows)] if consecutive else [insert_statement(table, [row]) for row in rows]


def ids_of(lastrowids: Sequence[int], count: int, *, consecutive: bool) -> list[int]:
    """The ids of the ``count`` rows of :func:`id_statements`, from their statements' last insert ids, in order."""
    if not count:
        return []
    return list(range(lastrowids[0], lastrowids[0] + count)) if consecutive else list(lastrowids[:count])


_CONSECUTIVE: dict[int, bool] = {}  # id(sync engine) -> the server's answer, asked once per engine


async def consecutive_ids_on(conn: AsyncConnection) -> bool:
    """Whether a multi-row INSERT's AUTO_INCREMENT ids are consecutive on this server (lock mode 0 or 1), asked on
    ``conn`` the first time for its engine and remembered."""
    key = id(conn.sync_engine)
    known = _CONSECUTIVE.get(key)
    if known is None:
        mode = await conn.exec_driver_sql("SELECT @@innodb_autoinc_lock_mode")
        known = _CONSECUTIVE[key] = int(mode.scalar_one()) in (0, 1)
    return known
