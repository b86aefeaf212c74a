"""Tests run no auditor process: they link pending audit rows into the chain themselves before reading it."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.tables import audit_log, audit_pending
from penpay.bootstrap import Database


async def chain_audit(db: Database) -> int:
    total = 0
    while True:
        async with db.uow(actor="auditor") as uow:
            chained = await uow.audit.chain_pending()
            await uow.commit()
        total += chained
        if not chained:
            return total


async def chained_seq(db: Database, subject: str) -> int:
    """The chain position of the (last) entry about ``subject``, after chaining what is pending."""
    await chain_audit(db)
    async with db.engine.connect() as conn:
        seq = await conn.scalar(sa.select(sa.func.max(audit_log.c.seq)).where(audit_log.c.subject == subject))
    assert seq is not None, f"no audit row about {subject}"
    return int(seq)


async def pending_subjects(conn: AsyncConnection, subjects: set[str] | None = None, *, prefix: str = "") -> list[str]:
    """The subjects of the entries waiting in ``audit_pending`` (those in ``subjects``, or starting with ``prefix``),
    in chain order."""
    rows = (await conn.execute(sa.select(audit_pending.c.entries).order_by(audit_pending.c.id))).scalars()
    found = [entry[2] for entries in rows for entry in json.loads(entries)]
    return [s for s in found if s.startswith(prefix) and (subjects is None or s in subjects)]
