"""The schema: migrations go up and down on an empty database; history cannot be rewritten in SQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from penpay.adapters.db import schema
from penpay.adapters.db.engine import create_engine, drop_database
from penpay.bootstrap import Database
from penpay_domain import ledger
from penpay_domain.money import Money
from tests.integration.audit_helpers import chained_seq
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
