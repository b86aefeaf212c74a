"""Composition helpers shared by the processes' roots: the clock and the database (engine + unit of work).

Each process's own ``main`` builds what it needs from ``Settings`` inside an async context manager; tests pass fakes
by argument instead. Nothing here connects at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db.engine import create_engine
from penpay.adapters.db.unit_of_work import SqlUnitOfWork
from penpay.settings import Settings
from penpay_domain.ports import Clock, UnitOfWork


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


_: Clock = SystemClock()


@dataclass(frozen=True, slots=True)
class Database:
    engine: AsyncEngine
    clock: Clock

    def uow(self, actor: str = "system", *, snapshot: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.clock, actor=actor, snapshot=snapshot)


def _conforms(db: Database) -> UnitOfWork:
    return db.uow()  # mypy checks that SqlUnitOfWork implements the UnitOfWork port


@asynccontextmanager
async def database(
    settings: Settings, *, clock: Clock | None = None, statement_cache: int | None = None
) -> AsyncIterator[Database]:
    """The process's engine; ``statement_cache`` overrides ``PENPAY_DATABASE_STATEMENT_CACHE`` for this process."""
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        statement_cache=settings.database_statement_cache if statement_cache is None else statement_cache,
    )
    try:
        yield Database(engine, clock or SystemClock())
    finally:
        await engine.dispose()
