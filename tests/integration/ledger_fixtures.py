"""Helpers for integration tests that need ledger accounts of their own (the chart is shared by the whole run)."""

from __future__ import annotations

import uuid

from penpay.bootstrap import Database
from penpay_domain import ledger
from penpay_domain.money import Currency


async def private_accounts(db: Database) -> tuple[ledger.AccountSpec, ledger.AccountSpec, ledger.AccountSpec]:
    """A rule-protected asset, a counter-account and an equity account, unique to the calling test."""
    tag = uuid.uuid4().hex[:10]
    asset = ledger.AccountSpec(
        f"t{tag}:agent", Currency.USD, ledger.BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS, "test asset"
    )
    other = ledger.AccountSpec(f"t{tag}:fx", Currency.USD, ledger.BalanceRule.NONE, "test counter-account")
    equity = ledger.AccountSpec(f"t{tag}:eq", Currency.USD, ledger.BalanceRule.NONE, "test equity")
    async with db.uow() as uow:
        await uow.ledger.ensure_chart([asset, other, equity])
        await uow.commit()
    return asset, other, equity
