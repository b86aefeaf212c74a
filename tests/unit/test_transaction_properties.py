"""Random sequences of calls on a transaction, valid or not, never leave the transition table; terminal states stay
terminal; and the ledger legs, replayed through the ledger, always match the status (hypothesis).

Two drivers: one draws any call at all (most are refused), one mostly draws calls the table allows so that runs
reach deep and terminal states, with a refused call mixed in now and then.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import event, given
from hypothesis import strategies as st

from penpay_domain.errors import DomainError
from penpay_domain.fees import FeePolicy
from penpay_domain.ids import PayoutId
from penpay_domain.money import Money
from penpay_domain.transaction import TERMINAL, TRANSITIONS, Kind, LegState, Status, Transaction, expected_legs
from tests.unit.domain_builders import NOW, PROPERTY, InMemoryLedger, a_deposit, a_withdrawal, snapshot
from tests.unit.test_transaction import (
    Step,
    credit_rejected,
    credit_started,
    credited,
    debit_rejected,
    debit_started,
    debited,
    flagged,
    paid,
    paid_out,
    payment_failed,
    payout_accepted,
    payout_failed,
    refunded,
    resolved,
    retried,
    reversed_,
    stk_accepted,
)

S = Status


def underpaid(t: Transaction, now: datetime) -> None:
    t.confirm_payment(receipt="SLKUNDER01", amount=t.amount_kes - Money.kes(1), now=now)


def refund_acknowledged(t: Transaction, now: datetime) -> None:
    del now  # acknowledging a refund request records ids only
    t.refund_accepted(payout_id=PayoutId("01HXREFUND0000000000"), conversation_id="AG_R_1")


# Each step with the status it aims at, per kind (None: not a transition of that kind).
FLOW: list[tuple[Step, dict[Kind, Status]]] = [
    (stk_accepted, {Kind.DEPOSIT: S.AWAITING_PAYMENT}),
    (paid, {Kind.DEPOSIT: S.PAYMENT_RECEIVED}),
    (payment_failed, {Kind.DEPOSIT: S.PAYMENT_FAILED}),
    (credit_started, {Kind.DEPOSIT: S.CREDITING}),
    (credited, {Kind.DEPOSIT: S.COMPLETED}),
    (credit_rejected, {Kind.DEPOSIT: S.REFUNDING}),
    (refunded, {Kind.DEPOSIT: S.REFUNDED}),
    (debit_started, {Kind.WITHDRAWAL: S.DEBITING}),
    (debited, {Kind.WITHDRAWAL: S.DEBITED}),
    (debit_rejected, {Kind.WITHDRAWAL: S.FAILED}),
    (payout_accepted, {Kind.WITHDRAWAL: S.PAYING_OUT}),
    (paid_out, {Kind.WITHDRAWAL: S.COMPLETED}),
    (payout_failed, {Kind.WITHDRAWAL: S.REVERSING}),
    (reversed_, {Kind.WITHDRAWAL: S.REVERSED}),
    (flagged, {Kind.DEPOSIT: S.NEEDS_REVIEW, Kind.WITHDRAWAL: S.NEEDS_REVIEW}),
    *((resolved(s), {Kind.DEPOSIT: s, Kind.WITHDRAWAL: s}) for s in Status),
    *((retried(s), {Kind.DEPOSIT: s, Kind.WITHDRAWAL: s}) for s in Status),
]
NEVER_A_TRANSITION: list[Step] = [underpaid, refund_acknowledged]
ALL: list[Step] = [step for step, _ in FLOW] + NEVER_A_TRANSITION


class Run:
    """A transaction, the ledger its transfers are replayed into, and the checks made after every call."""

    def __init__(self, kind: Kind, amount: int) -> None:
        fee = FeePolicy(bps=150, fixed_kes=5)
        self.txn = (
            a_deposit(amount_kes=amount, fee_policy=fee)
            if kind is Kind.DEPOSIT
            else a_withdrawal(amount_usd_cents=amount, fee_policy=fee)
        )
        self.book = InMemoryLedger.funded()
        self.book.apply_all(self.txn.pull_ledger_transfers())
        self.txn.pull_events()
        self.clock = NOW
        self.legs_under_review: dict[str, LegState] | None = None

    def call(self, step: Step) -> bool:
        txn, self.clock = self.txn, self.clock + timedelta(seconds=1)
        status, before = txn.status, snapshot(txn)
        refused: DomainError | None = None
        try:
            step(txn, self.clock)
        except DomainError as exc:
            refused = exc
        if refused is not None:
            assert snapshot(txn) == before, f"{step.__name__} raised {refused!r} but changed the transaction"
            return False
        assert status not in TERMINAL, f"{step.__name__} succeeded on a {status} transaction"
        events = txn.pull_events()
        if txn.status is status:
            assert step is refund_acknowledged
            assert events == []
        else:
            assert txn.status in TRANSITIONS[txn.kind][status]
            (only,) = events
            assert (only.from_status, only.to_status) == (status.value, txn.status.value)
        if txn.status is S.NEEDS_REVIEW:
            self.legs_under_review = dict(txn.legs)
        self.book.apply_all(txn.pull_ledger_transfers())
        self.check()
        return True

    def check(self) -> None:
        txn = self.txn
        assert txn.status in TRANSITIONS[txn.kind]
        expected = expected_legs(txn.status, txn.kind)
        assert txn.legs == (self.legs_under_review if expected is None else expected)
        assert self.book.leg_states(txn.id) == txn.legs
        assert self.book.trial_balance_ok()
        assert self.book.rule_violations() == []

    def allowed(self) -> list[Step]:
        return [
            step
            for step, targets in FLOW
            if (to := targets.get(self.txn.kind)) is not None and self.txn.can_move_to(to)
        ]


kinds = st.sampled_from(list(Kind))
amounts = st.integers(min_value=100, max_value=1_000_000)  # KES for a deposit, US cents for a withdrawal


class TestRandomCalls:
    @PROPERTY
    @given(kind=kinds, amount=amounts, script=st.lists(st.sampled_from(ALL), max_size=25))
    def test_any_sequence_of_calls_stays_inside_the_transition_table(
        self, kind: Kind, amount: int, script: list[Step]
    ) -> None:
        run = Run(kind, amount)
        for step in script:
            run.call(step)
        event(f"ended {run.txn.status.value}")

    @PROPERTY
    @given(kind=kinds, amount=amounts, data=st.data())
    def test_walks_that_follow_the_table_reach_an_end_that_stays_terminal(
        self, kind: Kind, amount: int, data: st.DataObject
    ) -> None:
        run = Run(kind, amount)
        for _ in range(12):
            if run.txn.is_terminal:
                break
            allowed = run.allowed()
            wild = data.draw(st.integers(0, 4)) == 0 or not allowed
            run.call(data.draw(st.sampled_from(ALL if wild else allowed)))
        event(f"ended {run.txn.status.value}")
        if run.txn.is_terminal:
            for step in ALL:
                assert not run.call(step), f"{step.__name__} moved a {run.txn.status} transaction"
