"""The double-entry ledger, TigerBeetle-style.

- An ``Account`` has a currency, a balance rule and four counters: debits/credits, each pending and posted.
- A ``Posting`` moves one positive amount from a debit account to a credit account of the same currency, so every
  transfer balances per currency by construction.
- A ``Transfer`` is a set of postings that commits atomically. It is single-phase (``POSTED``) or two-phase: a
  ``PENDING`` transfer reserves funds, and exactly one later ``POST_PENDING`` or ``VOID_PENDING`` transfer resolves
  it. Transfers and their entries are append-only: a resolution or a correction is a new transfer.
- Balance rules are checked when the constrained side grows: ``CREDITS_MUST_NOT_EXCEED_DEBITS`` keeps an asset (the
  Deriv agent balance, the B2C disbursement account) from going below zero, counting pending credits as spent.

Transfer ids are deterministic (``<transaction id>:<leg>``) so that repeating a step can never post it twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from penpay_domain.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    PendingTransferResolved,
    UnbalancedTransfer,
)
from penpay_domain.money import Currency, Money


class BalanceRule(StrEnum):
    NONE = "none"
    DEBITS_MUST_NOT_EXCEED_CREDITS = "debits_must_not_exceed_credits"
    CREDITS_MUST_NOT_EXCEED_DEBITS = "credits_must_not_exceed_debits"


@dataclass(frozen=True, slots=True)
class AccountSpec:
    code: str
    currency: Currency
    rule: BalanceRule
    description: str


# ---- chart of accounts ------------------------------------------------------------------------------------------
MPESA_COLLECTIONS = AccountSpec(
    "mpesa:collections", Currency.KES, BalanceRule.NONE, "asset: paybill/till collections from STK pushes"
)
MPESA_DISBURSEMENTS = AccountSpec(
    "mpesa:disbursements",
    Currency.KES,
    BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS,
    "asset: B2C utility account that pays customers; never below zero",
)
DERIV_AGENT = AccountSpec(
    "deriv:agent",
    Currency.USD,
    BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS,
    "asset: PenPay's Deriv payment-agent balance; never below zero",
)
FX_KES = AccountSpec("fx:KES", Currency.KES, BalanceRule.NONE, "FX position, KES side")
FX_USD = AccountSpec("fx:USD", Currency.USD, BalanceRule.NONE, "FX position, USD side")
FEES_KES = AccountSpec("fees:KES", Currency.KES, BalanceRule.NONE, "revenue: fees")
FEES_USD = AccountSpec("fees:USD", Currency.USD, BalanceRule.NONE, "revenue: fees")
CLEARING_KES = AccountSpec(
    "clearing:KES",
    Currency.KES,
    BalanceRule.DEBITS_MUST_NOT_EXCEED_CREDITS,
    "liability: KES owed back to customers",
)
CLEARING_USD = AccountSpec(
    "clearing:USD",
    Currency.USD,
    BalanceRule.DEBITS_MUST_NOT_EXCEED_CREDITS,
    "liability: USD owed back to customers",
)
SUSPENSE_KES = AccountSpec("suspense:KES", Currency.KES, BalanceRule.NONE, "unmatched KES awaiting review")
SUSPENSE_USD = AccountSpec("suspense:USD", Currency.USD, BalanceRule.NONE, "unmatched USD awaiting review")
EQUITY_KES = AccountSpec("equity:KES", Currency.KES, BalanceRule.NONE, "owner's funding of the KES accounts")
EQUITY_USD = AccountSpec("equity:USD", Currency.USD, BalanceRule.NONE, "owner's funding of the USD accounts")

CHART: tuple[AccountSpec, ...] = (
    MPESA_COLLECTIONS,
    MPESA_DISBURSEMENTS,
    DERIV_AGENT,
    FX_KES,
    FX_USD,
    FEES_KES,
    FEES_USD,
    CLEARING_KES,
    CLEARING_USD,
    SUSPENSE_KES,
    SUSPENSE_USD,
    EQUITY_KES,
    EQUITY_USD,
)
CHART_BY_CODE: Mapping[str, AccountSpec] = {spec.code: spec for spec in CHART}
FUNDABLE = (MPESA_DISBURSEMENTS, DERIV_AGENT, MPESA_COLLECTIONS)


COUNTERS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


@dataclass(frozen=True, slots=True)
class Account:
    code: str
    currency: Currency
    rule: BalanceRule
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @classmethod
    def open(cls, spec: AccountSpec) -> Account:
        return cls(spec.code, spec.currency, spec.rule)

    @property
    def balance(self) -> Money:
        """Posted balance, debit-normal (an asset's money; a liability shows negative)."""
        return Money(self.debits_posted - self.credits_posted, self.currency)

    @property
    def available(self) -> Money:
        """What an asset can still pay out: posted debits less posted and pending credits."""
        return Money(self.debits_posted - self.credits_posted - self.credits_pending, self.currency)

    def violates_rule(self) -> bool:
        if self.rule is BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return self.credits_pending + self.credits_posted > self.debits_posted
        if self.rule is BalanceRule.DEBITS_MUST_NOT_EXCEED_CREDITS:
            return self.debits_pending + self.debits_posted > self.credits_posted
        return False


@dataclass(frozen=True, slots=True)
class Posting:
    debit: str
    credit: str
    amount: Money

    def __post_init__(self) -> None:
        if self.debit == self.credit:
            raise UnbalancedTransfer(f"a posting cannot debit and credit the same account {self.debit}")
        if not self.amount.is_positive:
            raise UnbalancedTransfer(f"a posting moves a positive amount, got {self.amount}")


class TransferKind(StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    POST_PENDING = "post_pending"
    VOID_PENDING = "void_pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    id: str
    kind: TransferKind
    postings: tuple[Posting, ...]
    pending_id: str | None = None
    transaction_id: str | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 64:
            raise InvalidInput("a transfer id has 1 to 64 characters")
        resolves = self.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING)
        if resolves != (self.pending_id is not None):
            raise InvalidInput("exactly the post/void transfers reference a pending transfer")
        if not resolves and not self.postings:
            raise UnbalancedTransfer("a transfer needs at least one posting")
        if not balanced(self.postings):
            raise UnbalancedTransfer(f"transfer {self.id} does not balance per currency")

    def sums(self) -> dict[Currency, tuple[int, int]]:
        return _sums(self.postings)


def _sums(postings: Iterable[Posting]) -> dict[Currency, tuple[int, int]]:
    out: dict[Currency, tuple[int, int]] = {}
    for p in postings:
        debit, credit = out.get(p.amount.currency, (0, 0))
        out[p.amount.currency] = (debit + p.amount.minor, credit + p.amount.minor)
    return out


def balanced(postings: Iterable[Posting]) -> bool:
    return all(debit == credit for debit, credit in _sums(postings).values())


def pending(transfer_id: str, *postings: Posting, transaction_id: str | None = None, memo: str = "") -> Transfer:
    return Transfer(
        id=transfer_id, kind=TransferKind.PENDING, postings=postings, transaction_id=transaction_id, memo=memo
    )


def posted(transfer_id: str, *postings: Posting, transaction_id: str | None = None, memo: str = "") -> Transfer:
    return Transfer(
        id=transfer_id, kind=TransferKind.POSTED, postings=postings, transaction_id=transaction_id, memo=memo
    )


def post_pending(pending_id: str, *, transaction_id: str | None = None, memo: str = "") -> Transfer:
    return Transfer(
        id=f"{pending_id}:post",
        kind=TransferKind.POST_PENDING,
        postings=(),
        pending_id=pending_id,
        transaction_id=transaction_id,
        memo=memo,
    )


def void_pending(pending_id: str, *, transaction_id: str | None = None, memo: str = "") -> Transfer:
    return Transfer(
        id=f"{pending_id}:void",
        kind=TransferKind.VOID_PENDING,
        postings=(),
        pending_id=pending_id,
        transaction_id=transaction_id,
        memo=memo,
    )


def funding(transfer_id: str, spec: AccountSpec, amount: Money, memo: str = "funding") -> Transfer:
    """Owner's money into an asset account (e.g. topping up the Deriv agent balance)."""
    equity = EQUITY_KES if spec.currency is Currency.KES else EQUITY_USD
    return posted(transfer_id, Posting(spec.code, equity.code, amount), memo=memo)


def apply(
    accounts: Mapping[str, Account],
    transfer: Transfer,
    pending_transfer: Transfer | None = None,
    *,
    already_resolved: bool = False,
) -> dict[str, Account]:
    """Apply ``transfer`` to ``accounts`` (those it touches) and return their new states.

    For a post/void, ``pending_transfer`` is the pending transfer it resolves and ``already_resolved`` says whether
    another resolution exists. Raises ``InsufficientFunds`` if a balance rule would break, and the other domain
    errors for malformed input. Pure: the caller persists the result.
    """
    if transfer.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING):
        if pending_transfer is None or pending_transfer.id != transfer.pending_id:
            raise NotFound(f"pending transfer {transfer.pending_id} not found")
        if pending_transfer.kind is not TransferKind.PENDING:
            raise InvalidInput(f"transfer {pending_transfer.id} is not pending")
        if already_resolved:
            raise PendingTransferResolved(f"pending transfer {pending_transfer.id} was already posted or voided")
        postings = pending_transfer.postings
    else:
        postings = transfer.postings

    result = dict(accounts)
    for p in postings:
        for code in (p.debit, p.credit):
            if code not in result:
                raise NotFound(f"ledger account {code} not found")
            if result[code].currency is not p.amount.currency:
                raise CurrencyMismatch(f"account {code} is {result[code].currency.value}, posting is {p.amount}")
        result[p.debit] = _move(result[p.debit], transfer.kind, debit=p.amount.minor)
        result[p.credit] = _move(result[p.credit], transfer.kind, credit=p.amount.minor)

    if transfer.kind in (TransferKind.PENDING, TransferKind.POSTED):
        for code in {c for p in postings for c in (p.debit, p.credit)}:
            before, after = accounts[code], result[code]
            if after.violates_rule() and _constrained_side_grew(before, after):
                raise InsufficientFunds(
                    f"{transfer.id} would break the balance rule of {code} "
                    f"({before.rule.value}; posted balance {before.balance})",
                    account=code,
                )
    return {code: result[code] for code in {c for p in postings for c in (p.debit, p.credit)}}


def _constrained_side_grew(before: Account, after: Account) -> bool:
    if after.rule is BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS:
        return after.credits_pending + after.credits_posted > before.credits_pending + before.credits_posted
    return after.debits_pending + after.debits_posted > before.debits_pending + before.debits_posted


def _move(account: Account, kind: TransferKind, *, debit: int = 0, credit: int = 0) -> Account:
    if kind is TransferKind.POSTED:
        return replace(
            account,
            debits_posted=account.debits_posted + debit,
            credits_posted=account.credits_posted + credit,
        )
    if kind is TransferKind.PENDING:
        return replace(
            account,
            debits_pending=account.debits_pending + debit,
            credits_pending=account.credits_pending + credit,
        )
    if kind is TransferKind.POST_PENDING:
        return replace(
            account,
            debits_pending=account.debits_pending - debit,
            credits_pending=account.credits_pending - credit,
            debits_posted=account.debits_posted + debit,
            credits_posted=account.credits_posted + credit,
        )
    return replace(
        account,
        debits_pending=account.debits_pending - debit,
        credits_pending=account.credits_pending - credit,
    )


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """Per currency: the sums of all accounts' counters. Balanced means debits equal credits, posted and pending."""

    currency: Currency
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def ok(self) -> bool:
        return self.debits_posted == self.credits_posted and self.debits_pending == self.credits_pending


def trial_balance(accounts: Iterable[Account]) -> dict[Currency, TrialBalance]:
    sums: dict[Currency, list[int]] = {c: [0, 0, 0, 0] for c in Currency}
    for a in accounts:
        s = sums[a.currency]
        s[0] += a.debits_posted
        s[1] += a.credits_posted
        s[2] += a.debits_pending
        s[3] += a.credits_pending
    return {c: TrialBalance(c, *s) for c, s in sums.items()}


def rule_violations(accounts: Iterable[Account]) -> list[str]:
    return [a.code for a in accounts if a.violates_rule()]
