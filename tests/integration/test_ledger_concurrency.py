"""Concurrent postings against one account never overdraw it (row locks), on the real database."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from penpay.bootstrap import Database
from penpay_domain import ledger
from penpay_domain.errors import InsufficientFunds, PendingTransferResolved
from penpay_domain.money import Money
from tests.integration.ledger_fixtures import private_accounts

pytestmark = pytest.mark.integration


async def _apply(db: Database, transfer: ledger.Transfer) -> bool:
    async with db.uow() as uow:
        applied = await uow.ledger.apply(transfer)
        await uow.commit()
        return applied


class TestConcurrentPostings:
    async def test_many_concurrent_reservations_never_overdraw_the_account(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        await _apply(
            db, ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(10_000)))
        )

        async def reserve(n: int) -> str:
            transfer = ledger.pending(
                f"{asset.code}:r{n}", ledger.Posting(other.code, asset.code, Money.usd_cents(700))
            )
            try:
                await _apply(db, transfer)
            except InsufficientFunds:
                return "refused"
            return "reserved"

        results = await asyncio.gather(*(reserve(n) for n in range(40)))

        assert results.count("reserved") == 10_000 // 700  # 14 fit, 26 are refused
        async with db.uow() as uow:
            account = await uow.ledger.account(asset.code)
            totals = (await uow.ledger.entry_totals())[asset.code]
        assert account.credits_pending == 14 * 700
        assert account.available == Money.usd_cents(10_000 - 14 * 700)
        assert not account.violates_rule()
        assert {c: getattr(account, c) for c in ledger.COUNTERS} == totals

    async def test_concurrent_single_phase_transfers_spend_each_cent_once(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        await _apply(
            db, ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(5_000)))
        )

        async def spend(n: int) -> bool:
            try:
                return await _apply(
                    db,
                    ledger.posted(f"{asset.code}:s{n}", ledger.Posting(other.code, asset.code, Money.usd_cents(300))),
                )
            except InsufficientFunds:
                return False

        spent = await asyncio.gather(*(spend(n) for n in range(30)))

        assert sum(spent) == 16
        async with db.uow() as uow:
            assert (await uow.ledger.account(asset.code)).balance == Money.usd_cents(5_000 - 16 * 300)

    async def test_a_pending_transfer_is_resolved_exactly_once_under_a_race(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        await _apply(
            db, ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(1_000)))
        )
        pending_id = f"{asset.code}:p"
        await _apply(db, ledger.pending(pending_id, ledger.Posting(other.code, asset.code, Money.usd_cents(600))))

        async def resolve(post: bool) -> str:
            transfer = ledger.post_pending(pending_id) if post else ledger.void_pending(pending_id)
            try:
                applied = await _apply(db, transfer)
            except PendingTransferResolved:
                return "refused"  # the other resolution won
            if not applied:
                return "repeat"  # the same resolution, already applied: a harmless no-op
            return "post" if post else "void"

        outcomes = await asyncio.gather(*(resolve(n % 2 == 0) for n in range(12)))

        winners = [o for o in outcomes if o in ("post", "void")]
        assert len(winners) == 1
        async with db.uow() as uow:
            account = await uow.ledger.account(asset.code)
        assert account.credits_pending == 0
        assert account.credits_posted == (600 if winners == ["post"] else 0)

    async def test_repeating_a_transfer_id_posts_it_once(self, db: Database) -> None:
        asset, _, equity = await private_accounts(db)
        transfer = ledger.posted(
            f"fund:{uuid.uuid4().hex[:12]}", ledger.Posting(asset.code, equity.code, Money.usd_cents(50))
        )

        first = await _apply(db, transfer)
        again = await _apply(db, transfer)

        assert (first, again) == (True, False)
        async with db.uow() as uow:
            assert (await uow.ledger.account(asset.code)).balance == Money.usd_cents(50)


class TestApplyAll:
    """``apply_all`` (the unit of work's path) gives what ``apply`` one by one gives, with fewer locked statements."""

    async def test_several_transfers_in_one_call_match_their_entries_and_repeat_harmlessly(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        fund = ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(1_000)))
        a = ledger.pending(f"{asset.code}:a", ledger.Posting(other.code, asset.code, Money.usd_cents(300)))
        b = ledger.pending(f"{asset.code}:b", ledger.Posting(other.code, asset.code, Money.usd_cents(200)))
        async with db.uow() as uow:
            assert await uow.ledger.apply_all([fund, a, b]) == [True, True, True]
            await uow.commit()
        post_a, void_b = ledger.post_pending(a.id), ledger.void_pending(b.id)
        async with db.uow() as uow:
            assert await uow.ledger.apply_all([a, post_a, void_b]) == [False, True, True]  # a exists: skipped
            await uow.commit()
        async with db.uow() as uow:
            assert await uow.ledger.apply_all([post_a, void_b]) == [False, False]
            account = await uow.ledger.account(asset.code)
            totals = (await uow.ledger.entry_totals())[asset.code]
        assert (account.credits_pending, account.credits_posted, account.debits_posted) == (0, 300, 1_000)
        assert {c: getattr(account, c) for c in ledger.COUNTERS} == totals

    async def test_a_transfer_resolving_one_created_in_the_same_call_is_applied_in_order(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        fund = ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(500)))
        hold = ledger.pending(f"{asset.code}:h", ledger.Posting(other.code, asset.code, Money.usd_cents(500)))
        async with db.uow() as uow:
            assert await uow.ledger.apply_all([fund, hold, ledger.post_pending(hold.id)]) == [True, True, True]
            await uow.commit()
            account = await uow.ledger.account(asset.code)
        assert (account.credits_pending, account.credits_posted) == (0, 500)

    async def test_resolving_one_pending_twice_in_a_call_is_refused(self, db: Database) -> None:
        asset, other, equity = await private_accounts(db)
        fund = ledger.posted(f"{asset.code}:fund", ledger.Posting(asset.code, equity.code, Money.usd_cents(500)))
        hold = ledger.pending(f"{asset.code}:h", ledger.Posting(other.code, asset.code, Money.usd_cents(100)))
        await _apply(db, fund)
        await _apply(db, hold)
        async with db.uow() as uow:
            with pytest.raises(PendingTransferResolved):
                await uow.ledger.apply_all([ledger.post_pending(hold.id), ledger.void_pending(hold.id)])
