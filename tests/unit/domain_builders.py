"""Test data builders for the domain: a quote, parties, a deposit, a withdrawal, and an in-memory ledger.

Builders take keyword overrides so each test states only what it cares about. ``InMemoryLedger`` replays the
transfers an aggregate emits through the pure ``ledger.apply`` exactly as the database adapter must: a transfer id
is applied once, and a pending transfer is resolved at most once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import settings

from penpay_domain import ledger
from penpay_domain.fees import NO_FEE, FeePolicy
from penpay_domain.fx import LockedRate
from penpay_domain.ids import DerivLoginId, QuoteId, TransactionId, UserId, new_transaction_id
from penpay_domain.ledger import Account, Transfer, TransferKind
from penpay_domain.money import Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.transaction import LegState, Parties, Transaction

NOW = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=5)

# Property tests stay fast: the unit suite runs in seconds.
PROPERTY = settings(max_examples=200, deadline=None)

BIG_FLOAT_KES = Money.kes(10**12)
BIG_FLOAT_USD = Money.usd_cents(10**12)


def a_quote(
    *,
    mid: str = "129.50",
    spread_bps: int = 150,
    issued_at: datetime = NOW,
    ttl: timedelta = timedelta(minutes=2),
    quote_id: str = "Q-test",
) -> LockedRate:
    return LockedRate(
        quote_id=QuoteId(quote_id),
        mid=Decimal(mid),
        spread_bps=spread_bps,
        issued_at=issued_at,
        expires_at=issued_at + ttl,
    )


def some_parties(*, user_id: str = "user-1", msisdn: str = "254712345678", loginid: str = "CR1234567") -> Parties:
    return Parties(user_id=UserId(user_id), msisdn=Msisdn(msisdn), deriv_loginid=DerivLoginId(loginid))


def a_txn_id(now: datetime = NOW) -> TransactionId:
    return new_transaction_id(now, bytes(range(10)))


def a_deposit(
    *,
    amount_kes: int = 1_000,
    quote: LockedRate | None = None,
    fee_policy: FeePolicy = NO_FEE,
    now: datetime = NOW,
    txn_id: TransactionId | None = None,
) -> Transaction:
    return Transaction.new_deposit(
        id=txn_id or a_txn_id(now),
        parties=some_parties(),
        amount_kes=Money.kes(amount_kes),
        quote=quote or a_quote(issued_at=now),
        fee_policy=fee_policy,
        now=now,
    )


def a_withdrawal(
    *,
    amount_usd_cents: int = 1_000,
    quote: LockedRate | None = None,
    fee_policy: FeePolicy = NO_FEE,
    now: datetime = NOW,
    txn_id: TransactionId | None = None,
) -> Transaction:
    return Transaction.new_withdrawal(
        id=txn_id or a_txn_id(now),
        parties=some_parties(),
        amount_usd=Money.usd_cents(amount_usd_cents),
        quote=quote or a_quote(issued_at=now),
        fee_policy=fee_policy,
        now=now,
    )


class InMemoryLedger:
    """The whole chart of accounts in memory, applying transfers with ``ledger.apply``."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {spec.code: Account.open(spec) for spec in ledger.CHART}
        self.transfers: dict[str, Transfer] = {}
        self.resolution_of: dict[str, Transfer] = {}  # pending transfer id -> the post/void that resolved it

    @classmethod
    def funded(cls, kes: Money = BIG_FLOAT_KES, usd: Money = BIG_FLOAT_USD) -> InMemoryLedger:
        """A chart whose B2C account and Deriv agent balance hold money, as production's are topped up."""
        book = cls()
        book.apply(ledger.funding("fund:disbursements", ledger.MPESA_DISBURSEMENTS, kes))
        book.apply(ledger.funding("fund:agent", ledger.DERIV_AGENT, usd))
        return book

    def apply(self, transfer: Transfer) -> bool:
        """Apply once; False (and nothing changes) for a transfer id that was already applied."""
        if transfer.id in self.transfers:
            return False
        pending = self.transfers.get(transfer.pending_id) if transfer.pending_id else None
        updated = ledger.apply(
            self.accounts,
            transfer,
            pending,
            already_resolved=transfer.pending_id in self.resolution_of,
        )
        self.accounts.update(updated)
        self.transfers[transfer.id] = transfer
        if transfer.pending_id is not None:
            self.resolution_of[transfer.pending_id] = transfer
        return True

    def apply_all(self, transfers: Iterable[Transfer]) -> None:
        for transfer in transfers:
            self.apply(transfer)

    def leg_states(self, transaction_id: str) -> dict[str, LegState]:
        """Each leg of a transaction as the ledger sees it: pending, posted or voided."""
        out: dict[str, LegState] = {}
        prefix = f"{transaction_id}:"
        for transfer in self.transfers.values():
            if transfer.transaction_id != transaction_id or transfer.pending_id is not None:
                continue
            leg = transfer.id.removeprefix(prefix)
            if transfer.kind is TransferKind.POSTED:
                out[leg] = LegState.POSTED
                continue
            resolution = self.resolution_of.get(transfer.id)
            if resolution is None:
                out[leg] = LegState.PENDING
            elif resolution.kind is TransferKind.POST_PENDING:
                out[leg] = LegState.POSTED
            else:
                out[leg] = LegState.VOIDED
        return out

    def balance(self, spec: ledger.AccountSpec) -> Money:
        return self.accounts[spec.code].balance

    def trial_balance_ok(self) -> bool:
        return all(tb.ok for tb in ledger.trial_balance(self.accounts.values()).values())

    def rule_violations(self) -> list[str]:
        return ledger.rule_violations(self.accounts.values())


def snapshot(txn: Transaction) -> dict[str, object]:
    """Everything an aggregate holds, deep-copied, to prove that a refused call changed nothing."""
    return asdict(txn)
