"""For any sequence of ledger operations, valid or refused, the ledger balances per currency and no rule-protected
account breaks its rule (hypothesis stateful testing).

The machine funds accounts, applies random pending and single-phase transfers between same-currency accounts, and
posts or voids random pendings (some of them already resolved, or unknown). A refused operation must change nothing.
After every step it checks the trial balance, the balance rules, and the four counters of every account against a
plain recount of the transfers that were accepted.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from penpay_domain import ledger
from penpay_domain.errors import InsufficientFunds, NotFound, PendingTransferResolved
from penpay_domain.ledger import Account, AccountSpec, BalanceRule, Posting, Transfer, TransferKind
from penpay_domain.money import Currency, Money

ACCOUNTS_BY_CURRENCY = {c: [spec for spec in ledger.CHART if spec.currency is c] for c in Currency}


@st.composite
def postings(draw: st.DrawFn) -> tuple[Posting, ...]:
    """One to three postings, each between two different accounts of one currency."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        currency = draw(st.sampled_from(list(Currency)))
        debit, credit = draw(
            st.lists(st.sampled_from(ACCOUNTS_BY_CURRENCY[currency]), min_size=2, max_size=2, unique=True)
        )
        amount = Money(draw(st.integers(1, 5_000)), currency)
        out.append(Posting(debit.code, credit.code, amount))
    return tuple(out)


class LedgerMachine(RuleBasedStateMachine):
    pendings = Bundle("pendings")

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, Account] = {spec.code: Account.open(spec) for spec in ledger.CHART}
        self.transfers: dict[str, Transfer] = {}
        self.resolution_of: dict[str, TransferKind] = {}
        self.counter = 0

    def _next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _apply(self, transfer: Transfer) -> bool:
        """Apply, or check that a refusal (a broken balance rule) left the ledger untouched."""
        before = dict(self.accounts)
        pending = self.transfers.get(transfer.pending_id) if transfer.pending_id else None
        try:
            updated = ledger.apply(
                self.accounts, transfer, pending, already_resolved=transfer.pending_id in self.resolution_of
            )
        except InsufficientFunds:
            assert self.accounts == before
            event(f"{transfer.kind.value} refused: insufficient funds")
            return False
        self.accounts.update(updated)
        self.transfers[transfer.id] = transfer
        if transfer.pending_id is not None:
            self.resolution_of[transfer.pending_id] = transfer.kind
        return True

    @rule(spec=st.sampled_from(ledger.FUNDABLE), amount=st.integers(1, 20_000))
    def fund(self, spec: AccountSpec, amount: int) -> None:
        assert self._apply(ledger.funding(self._next_id("fund"), spec, Money(amount, spec.currency)))

    @rule(target=pendings, parts=postings())
    def reserve(self, parts: tuple[Posting, ...]) -> str:
        transfer = ledger.pending(self._next_id("p"), *parts)
        self._apply(transfer)
        return transfer.id  # refused ones too: resolving them must then be NotFound

    @rule(parts=postings())
    def move(self, parts: tuple[Posting, ...]) -> None:
        self._apply(ledger.posted(self._next_id("t"), *parts))

    @rule(pending_id=pendings, post=st.booleans())
    def resolve(self, pending_id: str, post: bool) -> None:
        transfer = ledger.post_pending(pending_id) if post else ledger.void_pending(pending_id)
        before = dict(self.accounts)
        if pending_id not in self.transfers:
            expected: type[Exception] | None = NotFound
        elif pending_id in self.resolution_of:
            expected = PendingTransferResolved
        else:
            expected = None
        refused: Exception | None = None
        try:
            self._apply(transfer)
        except (NotFound, PendingTransferResolved) as exc:
            refused = exc
        if refused is not None:
            assert type(refused) is expected, f"{pending_id}: {refused!r}, expected {expected}"
            assert self.accounts == before
            event(f"resolve refused: {type(refused).__name__}")
            return
        event(f"{transfer.kind.value} applied")
        assert expected is None, f"{pending_id}: resolved, expected {expected}"
        assert self.resolution_of[pending_id] is transfer.kind

    @invariant()
    def every_currency_balances(self) -> None:
        for currency, tb in ledger.trial_balance(self.accounts.values()).items():
            assert tb.ok, f"{currency}: {tb}"

    @invariant()
    def no_protected_account_breaks_its_rule(self) -> None:
        assert ledger.rule_violations(self.accounts.values()) == []
        for spec in ledger.CHART:
            if spec.rule is BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS:  # an asset never pays out what it lacks
                assert self.accounts[spec.code].available.minor >= 0, spec.code

    @invariant()
    def the_counters_are_a_recount_of_the_accepted_transfers(self) -> None:
        expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # debits/credits pending, posted
        for transfer in self.transfers.values():
            if transfer.pending_id is not None:
                continue
            resolution = self.resolution_of.get(transfer.id)
            if transfer.kind is TransferKind.PENDING and resolution is TransferKind.VOID_PENDING:
                continue
            posted = transfer.kind is TransferKind.POSTED or resolution is TransferKind.POST_PENDING
            for p in transfer.postings:
                expected[p.debit][2 if posted else 0] += p.amount.minor
                expected[p.credit][3 if posted else 1] += p.amount.minor
        for code, account in self.accounts.items():
            counters = [account.debits_pending, account.credits_pending, account.debits_posted, account.credits_posted]
            assert counters == expected[code], code


TestLedgerStateMachine = LedgerMachine.TestCase
TestLedgerStateMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
