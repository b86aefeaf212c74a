"""Several statements in one round trip: MySQL's multi-statement query, every statement's result read back in order.

A batch that sends its statements one after another waits for a round trip per statement, and on a busy machine
every round trip also waits for the server's thread and then the caller to get a core: the API's deposit batch
sent twelve. :func:`run_script` sends them as one query (asyncmy always asks the server for multi-statement
support) and reads each statement's result — its rows, affected rows and AUTO_INCREMENT id — in order.

The server runs the statements in order and stops at the first that fails; that statement's error is raised here
as SQLAlchemy would raise it (``IntegrityError``, ``OperationalError``, … with the driver's error as ``orig``), so
callers handle a script's failure exactly as a statement's. The statements are in the caller's open transaction;
a failed statement undoes only itself, so a caller that does not handle the error rolls the transaction back as
after any other failed statement. Every result is read, whatever happens, so the connection stays usable; one the
server dropped is invalidated, as SQLAlchemy invalidates it, so the pool never hands it out again.

Each value travels escaped into the query's text, as the driver escapes a statement's parameters
(``literals.py`` writes the common types itself, faster). SQLAlchemy does not run the
query itself, so its ``before_cursor_execute`` event is dispatched here once per script, with the whole text: a
listener (logging, the benchmark's statement counter) sees one statement per round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from asyncmy import errors as driver_errors
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.literals import literals

Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True, slots=True)
class StatementResult:
    rows: Sequence[tuple[Any, ...]]
    rowcount: int
    lastrowid: int


async def run_script(conn: AsyncConnection, statements: Sequence[Statement]) -> list[StatementResult]:
    """Run ``statements`` (SQL with ``%s`` placeholders, and their values) in one round trip, in order."""
    if not statements:
        return []
    sql = ";\n".join(text for text, _ in statements)
    params = tuple(v for _, values in statements for v in values)
    sync = conn.sync_connection
    if sync is None:
        raise RuntimeError("the connection is not open")
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    results: list[StatementResult] = []
    error: DBAPIError | None = None
    async with driver.cursor() as cursor:
        sync.dispatch.before_cursor_execute(sync, cursor, sql, params, None, False)
        try:
            # bound here, as text: a multi-statement query cannot be prepared, and with values the driver would
            # try (and fail) to prepare each new one (the engine's statement cache)
            await cursor.execute(sql % literals(params, driver))
            results.append(await _result(cursor))
            while await cursor.nextset():
                results.append(await _result(cursor))
        except driver_errors.Error as exc:
            failed = statements[min(len(results), len(statements) - 1)]
            lost = sync.dialect.is_disconnect(cast(Any, exc), raw.dbapi_connection, cursor)
            wrapped = DBAPIError.instance(
                failed[0], tuple(failed[1]), exc, driver_errors.Error, connection_invalidated=lost
            )
            error = wrapped if isinstance(wrapped, DBAPIError) else DBAPIError(failed[0], failed[1], exc)
    if error is not None:
        if error.connection_invalidated:  # as SQLAlchemy does: this connection never goes back to the pool
            await conn.invalidate()
        raise error from error.orig
    if len(results) != len(statements):
        raise RuntimeError(f"a script of {len(statements)} statements returned {len(results)} results")
    return results


async def _result(cursor: Any) -> StatementResult:
    rows = await cursor.fetchall() if cursor.description else ()
    return StatementResult(rows=rows, rowcount=int(cursor.rowcount), lastrowid=int(cursor.lastrowid or 0))
