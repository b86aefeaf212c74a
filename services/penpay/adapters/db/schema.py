"""Bringing a database to the current schema: create it if missing, run Alembic, open the chart of accounts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config

from penpay.adapters.db.engine import create_database, create_engine
from penpay.adapters.db.ledger import SqlLedgerRepository

MIGRATIONS = Path(__file__).resolve().parents[4] / "migrations"


def alembic_config(database_url: str) -> Config:
    if not (MIGRATIONS / "env.py").exists():
        raise FileNotFoundError(f"Alembic migrations not found at {MIGRATIONS}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Synchronous: Alembic runs its own event loop. Call it from outside any running loop."""
    asyncio.run(create_database(database_url))
    command.upgrade(alembic_config(database_url), revision)
    asyncio.run(open_chart(database_url))


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


async def open_chart(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await SqlLedgerRepository(conn, datetime.now(UTC)).ensure_chart()
    finally:
        await engine.dispose()
