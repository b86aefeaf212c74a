"""Operator use cases: the ledger invariant check, the Deriv agent balance's reconciliation and the audit-chain
verification (admin routes and the CLI)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from penpay_domain import ledger
from penpay_domain.ports import ChainReport, DerivGateway, UnitOfWork
from penpay_domain.reconciliation import ProviderBalanceCheck, reconcile_provider_balance
from penpay_domain.transaction import expected_legs


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    ok: bool
    currencies: dict[str, dict[str, int | bool]]
    problems: list[str] = field(default_factory=list)


async def check_ledger(uow_factory: Callable[[], UnitOfWork], *, transactions: bool = True) -> LedgerCheck:
    """Every invariant of ARCHITECTURE §3, in one read-only pass:

    - per currency, posted debits equal posted credits and pending debits equal pending credits (the sum of all
      balances is zero);
    - every account's counters equal the sums of its entries (nothing bypassed the ledger);
    - no account breaks its balance rule;
    - every transaction's ledger legs are exactly those its status implies.

    ``uow_factory`` must read as of one moment (the adapters' ``snapshot``): on a live database the counters, the
    entries and the statuses are otherwise read at different moments, and a commit between two reads looks like a
    broken invariant."""
    problems: list[str] = []
    async with uow_factory() as uow:
        accounts = await uow.ledger.accounts()
        totals = await uow.ledger.entry_totals()
        legs = await uow.ledger.leg_states() if transactions else {}
        statuses = await uow.transactions.statuses() if transactions else {}
    trial = ledger.trial_balance(accounts)
    currencies: dict[str, dict[str, int | bool]] = {}
    for currency, tb in trial.items():
        currencies[currency.value] = {
            "debits_posted": tb.debits_posted,
            "credits_posted": tb.credits_posted,
            "debits_pending": tb.debits_pending,
            "credits_pending": tb.credits_pending,
            "balanced": tb.ok,
        }
        if not tb.ok:
            problems.append(f"{currency.value} does not balance: {tb}")
    for account in accounts:
        from_entries = totals.get(account.code, dict.fromkeys(ledger.COUNTERS, 0))
        for counter in ledger.COUNTERS:
            if getattr(account, counter) != from_entries[counter]:
                problems.append(
                    f"{account.code}.{counter} is {getattr(account, counter)} but its entries sum to "
                    f"{from_entries[counter]}"
                )
    problems.extend(f"{code} breaks its balance rule" for code in ledger.rule_violations(accounts))
    for txn_id, (kind, status) in statuses.items():
        want = expected_legs(status, kind)
        have = dict(legs.get(txn_id, {}))
        if want is None:  # NEEDS_REVIEW keeps the legs it had, which must at least exist
            if not have:
                problems.append(f"transaction {txn_id} ({status.value}) has no ledger legs")
            continue
        if have != want:
            problems.append(f"transaction {txn_id} is {status.value} but its ledger legs are {have}, expected {want}")
    return LedgerCheck(ok=not problems, currencies=currencies, problems=problems)


async def verify_audit(uow_factory: Callable[[], UnitOfWork]) -> ChainReport:
    async with uow_factory() as uow:
        return await uow.audit.verify()


async def reconcile_deriv_agent(uow_factory: Callable[[], UnitOfWork], gateway: DerivGateway) -> ProviderBalanceCheck:
    """``deriv:agent`` against the payment-agent balance Deriv reports (through the gateway).

    The ledger is read first and Deriv second: a transfer that executes between the two reads was pending in the
    ledger's read, so it moves Deriv's balance within the range the reconciliation allows. (Read the other way
    round, a credit executed and posted in between would look like drift.) A deposit created, paid and credited
    entirely between the two reads can still show as drift for a moment on a busy platform, and so can a balance
    the gateway answers from Deriv's last push just before Deriv's next one: ask again before acting on one
    reading; on a quiet platform the figures must match exactly."""
    async with uow_factory() as uow:
        account = await uow.ledger.account(ledger.DERIV_AGENT.code)
    return reconcile_provider_balance(account, await gateway.balance())
