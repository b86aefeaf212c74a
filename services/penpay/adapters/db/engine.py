"""The async engine (SQLAlchemy 2 + asyncmy) and database bootstrap helpers. Nothing connects at import."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

STATEMENT_CACHE = 64


def create_engine(
    database_url: str, *, pool_size: int = 20, statement_cache: int = STATEMENT_CACHE, echo: bool = False
) -> AsyncEngine:
    """A pooled engine. READ COMMITTED keeps locking reads and plain reads consistent with what other
    transactions committed (the money path relies on row locks, not on snapshot reads).

    Statements with values run as server-side prepared statements (asyncmy's statement cache: ``statement_cache``
    per connection, least recently used dropped): the values travel in the binary protocol, with no escaping into
    the SQL text, and rows come back binary, which took ~14 % off the worker's and MariaDB's CPU per deposit
    (docs/performance.md, round 7). A statement the server will not prepare runs as text, as before. The server
    holds at most ``max_prepared_stmt_count`` (16,382 by default) for all its clients: each PenPay process holds up
    to 2 x ``pool_size`` x ``statement_cache`` (40 x 64 = 2,560 with the defaults). 0 turns it off, as the API does:
    its hot statements go as scripts (text), and a statement whose shape changes with each batch's size is only
    prepared to be dropped again.

    No ping on checkout: it would be one more round trip for every unit of work (several per deposit). Connections
    are recycled well inside the server's ``wait_timeout``, and a connection found dead (the server restarted) fails
    that one unit of work, which rolls back whole; SQLAlchemy then discards the pool's other connections, and the
    work is retried — a worker's message comes back, an API client retries under its idempotency key.

    A connection goes back to the pool rolled back only if the server says it is inside a transaction
    (:func:`_reset_if_in_transaction`): SQLAlchemy's default sends a ROLLBACK for every unit of work that committed,
    one more round trip each."""
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        pool_reset_on_return=None,
        isolation_level="READ COMMITTED",
        echo=echo,
        connect_args={"connect_timeout": 5, "stmt_cache_size": statement_cache},
    )
    event.listen(engine.sync_engine.pool, "reset", _reset_if_in_transaction)
    return engine


def _reset_if_in_transaction(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's reset on return: ROLLBACK unless the connection is known to be outside a transaction.

    Every OK packet carries the server's status flags, and asyncmy keeps the last ones: after a COMMIT or ROLLBACK
    they say "not in a transaction". A connection closed inside a transaction that SQLAlchemy knows of was already
    rolled back (``transaction_was_reset``); anything else, or a driver that cannot tell, is rolled back."""
    if state.transaction_was_reset or not state.asyncio_safe:
        return  # not asyncio_safe: the connection is being thrown away (garbage collected), not reused
    driver = getattr(dbapi_connection, "driver_connection", None)
    in_transaction = getattr(driver, "get_transaction_status", None)
    if in_transaction is not None and not in_transaction():
        return
    dbapi_connection.rollback()


async def begin(engine: AsyncEngine, *, snapshot: bool = False) -> AsyncConnection:
    """A pooled connection with its database transaction begun: how a unit of work starts (``release`` ends it).

    ``snapshot``: the transaction reads the database as of one moment (REPEATABLE READ: every plain read sees what
    was committed when the first one ran), for a read-only pass that compares tables, such as the ledger check's
    counters against the sums of their entries; under the engine's READ COMMITTED each statement sees the commits
    made since the one before, so a pass over a busy database would report differences that never existed. The
    connection gets the engine's level back when it returns to the pool."""
    conn = await engine.connect()
    if snapshot:
        await conn.execution_options(isolation_level="REPEATABLE READ")
    await conn.begin()
    return conn


async def release(conn: AsyncConnection | None, *, committed: bool) -> None:
    """End a unit of work's connection: roll back unless it committed, and return it to the pool either way."""
    if conn is None:
        return
    try:
        if not committed:
            await conn.rollback()
    finally:
        await conn.close()


def server_url(database_url: str) -> tuple[URL, str]:
    """Split a database URL into the server URL (no database) and the database name."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"the database URL names no database: {url.render_as_string(hide_password=True)}")
    return url.set(database=""), name


async def create_database(database_url: str, *, drop_first: bool = False) -> None:
    server, name = server_url(database_url)
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        async with engine.connect() as conn:
            if drop_first:
                await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            await conn.execute(
                sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            )
    finally:
        await engine.dispose()


async def drop_database(database_url: str) -> None:
    server, name = server_url(database_url)
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await engine.dispose()


def to_db(moment: datetime) -> datetime:
    """Aware datetime -> naive UTC for DATETIME(6) columns."""
    if moment.tzinfo is UTC:  # PenPay's own clock: no conversion to make
        return moment.replace(tzinfo=None)
    if moment.tzinfo is None:
        raise ValueError("refusing a naive datetime on the money path")
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)
