"""The schema: migrations go up and down on an empty database; history cannot be rewritten in SQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from penpay.adapters.db import schema
from penpay.adapters.db.engine import create_engine, drop_database
from penpay.adapters.db.tables import audit_log
from penpay.bootstrap import Database, SystemClock
from penpay_domain import ledger
from penpay_domain.money import Money
from tests.integration.audit_helpers import chain_audit, chained_seq
from tests.integration.ledger_fixtures import private_accounts

pytestmark = pytest.mark.integration


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return {r[0] for r in await conn.execute(sa.text("SHOW TABLES"))}
    finally:
        await engine.dispose()


class TestMigrations:
    def test_up_down_up_on_an_empty_database(self, database_url: str) -> None:
        url = (
            make_url(database_url)
            .set(database=f"penpay_mig_{uuid.uuid4().hex[:8]}")
            .render_as_string(hide_password=False)
        )
        try:
            schema.upgrade(url)
            assert {
                "transactions",
                "ledger_entries",
                "ledger_transfers",
                "ledger_accounts",
                "audit_log",
                "outbox",
                "idempotency_keys",
                "processed_messages",
                "deriv_accounts",
            } <= asyncio.run(_tables(url))
            schema.downgrade(url)
            assert asyncio.run(_tables(url)) == {"alembic_version"}
            schema.upgrade(url)
            assert "ledger_entries" in asyncio.run(_tables(url))
        finally:
            asyncio.run(drop_database(url))


class TestMigratedSchemaIsTheDeclaredOne:
    """``tables.py`` (what the code queries) and the migrations (what a database gets) describe one schema: tables,
    columns, indexes, unique and foreign keys. Column types are left out: MariaDB reports some under other names
    (``LargeBinary(16 MiB)`` is a ``LONGBLOB``)."""

    async def test_no_difference(self, db: Database) -> None:
        from alembic.autogenerate import compare_metadata  # noqa: PLC0415
        from alembic.migration import MigrationContext  # noqa: PLC0415

        from penpay.adapters.db.tables import metadata  # noqa: PLC0415

        def diff(sync: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(sync, opts={"compare_type": False})
            return list(compare_metadata(context, metadata))

        async with db.engine.connect() as conn:
            assert await conn.run_sync(diff) == []


class TestAuditPendingPerUnitOfWork:
    """Migration 0007: entries pending at the upgrade are chained as they would have been; the downgrade gives one
    row per entry back, in order."""

    OLD_ROWS = [  # (actor, action, subject, payload) as 0006's audit_pending held them
        ("user:u1", "ledger.pending", "t1:kes", '{"pending_id":null,"postings":[["a","b",10,"KES"]]}'),
        ("mpesa", "mpesa.callback_received", "t1", '{"raw":"\\u00e9 \\"quoted\\" ñ"}'),
        ("worker", "deposit.completed", "t1", "{}"),
    ]

    @staticmethod
    async def _sql(url: str, statement: str, params: dict[str, object] | None = None) -> list[sa.Row[Any]]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(statement), params or {})
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    def test_pending_entries_survive_the_upgrade_and_the_downgrade(self, database_url: str) -> None:
        from penpay.adapters.db.audit import GENESIS, chain_hash  # noqa: PLC0415

        url = (
            make_url(database_url)
            .set(database=f"penpay_mig_{uuid.uuid4().hex[:8]}")
            .render_as_string(hide_password=False)
        )
        at = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
        insert = (
            "INSERT INTO audit_pending (occurred_at, actor, action, subject, payload) "
            "VALUES (:at, :actor, :action, :subject, :payload)"
        )
        try:
            schema.upgrade(url, "0006")
            for actor, action, subject, payload in self.OLD_ROWS:
                params = {
                    "at": at.replace(tzinfo=None),
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "payload": payload,
                }
                asyncio.run(self._sql(url, insert, params))
            schema.upgrade(url)
            rows = asyncio.run(self._sql(url, "SELECT entry_count, entries FROM audit_pending ORDER BY id"))
            assert [(r.entry_count, json.loads(r.entries)) for r in rows] == [(1, [list(e)]) for e in self.OLD_ROWS]

            schema.downgrade(url, "0006")
            back = asyncio.run(self._sql(url, "SELECT actor, action, subject, payload FROM audit_pending ORDER BY id"))
            assert [tuple(r) for r in back] == self.OLD_ROWS

            schema.upgrade(url)

            async def chained() -> list[sa.Row[Any]]:
                db = Database(create_engine(url, pool_size=2), SystemClock())
                try:
                    assert await chain_audit(db) == len(self.OLD_ROWS)
                    async with db.engine.connect() as conn:
                        return list((await conn.execute(sa.select(audit_log).order_by(audit_log.c.seq))).all())
                finally:
                    await db.engine.dispose()

            prev = GENESIS
            for seq, (row, (actor, action, subject, payload)) in enumerate(
                zip(asyncio.run(chained()), self.OLD_ROWS, strict=True), start=1
            ):
                assert (row.actor, row.action, row.subject, row.payload) == (actor, action, subject, payload)
                expected = chain_hash(
                    prev, seq=seq, occurred_at=at, actor=actor, action=action, subject=subject,
                    payload_json=payload,
                )  # fmt: skip
                assert (row.prev_hash, row.hash) == (prev, expected)
                prev = expected
        finally:
            asyncio.run(drop_database(url))


class TestAppendOnly:
    async def _raw(self, db: Database, statement: str) -> None:
        async with db.engine.begin() as conn:
            await conn.execute(sa.text(statement))

    async def _one_posting(self, db: Database) -> str:
        asset, _, equity = await private_accounts(db)
        async with db.uow() as uow:
            await uow.ledger.apply(
                ledger.posted(f"{asset.code}:f", ledger.Posting(asset.code, equity.code, Money.usd_cents(5)))
            )
            await uow.commit()
        return f"{asset.code}:f"

    @pytest.mark.parametrize("verb", ["UPDATE ledger_entries SET amount = amount + 1", "DELETE FROM ledger_entries"])
    async def test_ledger_entries_cannot_be_changed_or_removed(self, db: Database, verb: str) -> None:
        transfer_id = await self._one_posting(db)
        with pytest.raises(DBAPIError, match="append-only"):
            await self._raw(db, f"{verb} WHERE transfer_id = '{transfer_id}'")

    @pytest.mark.parametrize("verb", ["UPDATE ledger_transfers SET memo = 'x'", "DELETE FROM ledger_transfers"])
    async def test_ledger_transfers_cannot_be_changed_or_removed(self, db: Database, verb: str) -> None:
        transfer_id = await self._one_posting(db)
        with pytest.raises(DBAPIError, match="append-only"):
            await self._raw(db, f"{verb} WHERE id = '{transfer_id}'")

    @pytest.mark.parametrize("verb", ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"])
    async def test_audit_rows_cannot_be_changed_or_removed(self, db: Database, verb: str) -> None:
        async with db.uow() as uow:
            subject = f"probe-{uuid.uuid4().hex[:8]}"
            await uow.audit.append(actor="test", action="probe", subject=subject, payload={}, now=uow.now)
            await uow.commit()
        seq = await chained_seq(db, subject)
        with pytest.raises(DBAPIError, match="append-only"):
            await self._raw(db, f"{verb} WHERE seq = {seq}")

    async def test_the_database_refuses_an_overdraft_even_if_code_were_wrong(self, db: Database) -> None:
        asset, _, _ = await private_accounts(db)
        with pytest.raises(DBAPIError, match="credits_within_debits"):
            await self._raw(db, f"UPDATE ledger_accounts SET credits_posted = 1 WHERE code = '{asset.code}'")
