"""The Transaction aggregate: deposit and withdrawal state machines, one event per transition, and ledger legs that
always match the status when replayed through the ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from penpay_domain import events as ev
from penpay_domain import ledger
from penpay_domain.errors import IllegalTransition, InvalidAmount, InvalidInput, QuoteExpired
from penpay_domain.fees import FeePolicy
from penpay_domain.fx import Side
from penpay_domain.ids import PayoutId
from penpay_domain.ledger import Posting, TransferKind
from penpay_domain.money import Money
from penpay_domain.transaction import TERMINAL, TRANSITIONS, Kind, LegState, Status, Transaction, expected_legs
from tests.unit.domain_builders import (
    BIG_FLOAT_KES,
    BIG_FLOAT_USD,
    NOW,
    InMemoryLedger,
    a_deposit,
    a_quote,
    a_withdrawal,
    snapshot,
)

S = Status
P, X, V = LegState.PENDING, LegState.POSTED, LegState.VOIDED
Step = Callable[[Transaction, datetime], None]


# ---- steps, as an operator or a provider callback would drive them ---------------------------------------------------
def stk_accepted(t: Transaction, now: datetime) -> None:
    t.stk_push_accepted("ws_CO_191220191020363925", now)


def paid(t: Transaction, now: datetime) -> None:
    t.confirm_payment(receipt="SLK1A2B3C4", amount=t.amount_kes, now=now)


def payment_failed(t: Transaction, now: datetime) -> None:
    t.fail_payment(code="1032", reason="Request cancelled by user", now=now)


def credit_started(t: Transaction, now: datetime) -> None:
    t.start_credit(now)


def credited(t: Transaction, now: datetime) -> None:
    t.complete_credit(deriv_transaction_id="D-1001", now=now)


def credit_rejected(t: Transaction, now: datetime) -> None:
    t.reject_credit(code="PaymentAgentTransferError", reason="client account disabled", now=now)


def refunded(t: Transaction, now: datetime) -> None:
    t.complete_refund(receipt="SLK9R8F7U6", now=now)


def debit_started(t: Transaction, now: datetime) -> None:
    t.start_debit(now)


def debited(t: Transaction, now: datetime) -> None:
    t.complete_debit(deriv_transaction_id="D-2001", now=now)


def debit_rejected(t: Transaction, now: datetime) -> None:
    t.reject_debit(code="InvalidVerificationCode", reason="verification code expired", now=now)


def payout_accepted(t: Transaction, now: datetime) -> None:
    t.payout_accepted(payout_id=PayoutId("01HX0000000000000000"), conversation_id="AG_20240501_1", now=now)


def paid_out(t: Transaction, now: datetime) -> None:
    t.complete_payout(receipt="SLK5P4O3U2", now=now)


def payout_failed(t: Transaction, now: datetime) -> None:
    t.fail_payout(code="2001", reason="The initiator information is invalid", now=now)


def reversed_(t: Transaction, now: datetime) -> None:
    t.complete_reversal(deriv_transaction_id="D-2002", now=now)


def flagged(t: Transaction, now: datetime) -> None:
    t.flag_for_review(reason="no answer from Deriv after 3 queries", now=now)


def resolved(status: Status) -> Step:
    def step(t: Transaction, now: datetime) -> None:
        t.resolve(status, now=now, by="admin@penpay", note="checked at the provider")

    step.__name__ = f"resolved_{status.value.lower()}"
    return step


def retried(status: Status) -> Step:
    def step(t: Transaction, now: datetime) -> None:
        t.resume(status, now=now, by="admin@penpay")

    step.__name__ = f"retried_{status.value.lower()}"
    return step


Path = list[tuple[Step, type[ev.TransactionEvent], Status]]

DEPOSIT_PATHS: dict[str, Path] = {
    "happy path": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (credited, ev.DepositCompleted, S.COMPLETED),
    ],
    "stk push refused": [(payment_failed, ev.DepositPaymentFailed, S.PAYMENT_FAILED)],
    "payment failed": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (payment_failed, ev.DepositPaymentFailed, S.PAYMENT_FAILED),
    ],
    "credit rejected then refunded": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (credit_rejected, ev.DerivCreditRejected, S.REFUNDING),
        (refunded, ev.DepositRefunded, S.REFUNDED),
    ],
    "review while crediting, resolved as credited": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.COMPLETED), ev.TransactionResolved, S.COMPLETED),
    ],
    "review while crediting, resolved as refunding": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.REFUNDING), ev.TransactionResolved, S.REFUNDING),
        (refunded, ev.DepositRefunded, S.REFUNDED),
    ],
    "review while crediting, retried": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (retried(S.CREDITING), ev.TransactionResolved, S.CREDITING),
        (credited, ev.DepositCompleted, S.COMPLETED),
    ],
    "review while awaiting payment, resolved as failed": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.PAYMENT_FAILED), ev.TransactionResolved, S.PAYMENT_FAILED),
    ],
    "review while awaiting payment, found paid": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (retried(S.CREDITING), ev.TransactionResolved, S.CREDITING),
        (credited, ev.DepositCompleted, S.COMPLETED),
    ],
    "review while refunding, retried": [
        (stk_accepted, ev.StkPushAccepted, S.AWAITING_PAYMENT),
        (paid, ev.DepositPaymentReceived, S.PAYMENT_RECEIVED),
        (credit_started, ev.DerivCreditStarted, S.CREDITING),
        (credit_rejected, ev.DerivCreditRejected, S.REFUNDING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (retried(S.REFUNDING), ev.TransactionResolved, S.REFUNDING),
        (refunded, ev.DepositRefunded, S.REFUNDED),
    ],
}

WITHDRAWAL_PATHS: dict[str, Path] = {
    "happy path": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debited, ev.WithdrawalDebited, S.DEBITED),
        (payout_accepted, ev.PayoutAccepted, S.PAYING_OUT),
        (paid_out, ev.WithdrawalCompleted, S.COMPLETED),
    ],
    "debit rejected": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debit_rejected, ev.WithdrawalFailed, S.FAILED),
    ],
    "payout failed then reversed": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debited, ev.WithdrawalDebited, S.DEBITED),
        (payout_accepted, ev.PayoutAccepted, S.PAYING_OUT),
        (payout_failed, ev.PayoutFailed, S.REVERSING),
        (reversed_, ev.WithdrawalReversed, S.REVERSED),
    ],
    "payout request refused then reversed": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debited, ev.WithdrawalDebited, S.DEBITED),
        (payout_failed, ev.PayoutFailed, S.REVERSING),
        (reversed_, ev.WithdrawalReversed, S.REVERSED),
    ],
    "review while debiting, found debited": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (retried(S.DEBITED), ev.TransactionResolved, S.DEBITED),
        (payout_accepted, ev.PayoutAccepted, S.PAYING_OUT),
        (paid_out, ev.WithdrawalCompleted, S.COMPLETED),
    ],
    "review while debiting, resolved as failed": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.FAILED), ev.TransactionResolved, S.FAILED),
    ],
    "review while paying out, resolved as paid": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debited, ev.WithdrawalDebited, S.DEBITED),
        (payout_accepted, ev.PayoutAccepted, S.PAYING_OUT),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.COMPLETED), ev.TransactionResolved, S.COMPLETED),
    ],
    "review while paying out, resolved as reversing": [
        (debit_started, ev.DerivDebitStarted, S.DEBITING),
        (debited, ev.WithdrawalDebited, S.DEBITED),
        (payout_accepted, ev.PayoutAccepted, S.PAYING_OUT),
        (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
        (resolved(S.REVERSING), ev.TransactionResolved, S.REVERSING),
        (reversed_, ev.WithdrawalReversed, S.REVERSED),
    ],
}

FEE = FeePolicy(bps=150, fixed_kes=5)


def walk(txn: Transaction, path: Path, book: InMemoryLedger | None = None) -> InMemoryLedger:
    """Drive ``txn`` along ``path``, checking every step's event and the ledger it leaves behind."""
    book = book or InMemoryLedger.funded()
    book.apply_all(txn.pull_ledger_transfers())
    txn.pull_events()
    for i, (step, event_type, to) in enumerate(path, start=1):
        at = NOW + timedelta(seconds=i)
        before, legs_before = txn.status, book.leg_states(txn.id)
        step(txn, at)
        (event,) = txn.pull_events()
        assert type(event) is event_type, step.__name__
        assert (event.from_status, event.to_status) == (before.value, to.value)
        assert (event.transaction_id, event.occurred_at, event.kind) == (txn.id, at, txn.kind.value)
        assert (txn.status, txn.updated_at) == (to, at)
        book.apply_all(txn.pull_ledger_transfers())
        expected = expected_legs(to, txn.kind)
        assert book.leg_states(txn.id) == (legs_before if expected is None else expected), step.__name__
        assert book.leg_states(txn.id) == txn.legs
        assert book.trial_balance_ok()
        assert book.rule_violations() == []
    return book


class TestTransitionTable:
    def test_every_status_of_a_kind_has_a_row(self) -> None:
        for table in TRANSITIONS.values():
            for targets in table.values():
                assert targets <= set(table)

    def test_terminal_statuses_lead_nowhere(self) -> None:
        assert {S.COMPLETED, S.PAYMENT_FAILED, S.REFUNDED, S.FAILED, S.REVERSED} == TERMINAL

    def test_every_non_terminal_status_can_be_sent_for_review(self) -> None:
        for table in TRANSITIONS.values():
            for status, targets in table.items():
                if status not in TERMINAL and status is not S.NEEDS_REVIEW:
                    assert S.NEEDS_REVIEW in targets, status


class TestNewDeposit:
    def test_a_deposit_starts_pending_with_its_amounts_locked(self) -> None:
        quote = a_quote(mid="129.50", spread_bps=150)
        txn = a_deposit(amount_kes=1_000, quote=quote, fee_policy=FEE)
        assert (txn.kind, txn.status) == (Kind.DEPOSIT, S.PENDING)
        assert txn.fee == Money.kes(20)  # 15 (1.5%) + 5 fixed
        assert txn.amount_usd == quote.kes_to_usd(Money.kes(980)) == Money.usd_cents(745)
        assert txn.fx_rate == quote.applied_rate(Side.CUSTOMER_BUYS_USD) == Decimal("131.4425")
        assert txn.created_at == txn.updated_at == NOW

    def test_creation_is_an_event(self) -> None:
        (event,) = a_deposit().events
        assert type(event) is ev.DepositRequested
        assert (event.from_status, event.to_status, event.user_id, event.kind) == (None, "PENDING", "user-1", "deposit")

    def test_creation_reserves_both_legs(self) -> None:
        txn = a_deposit(amount_kes=1_000, fee_policy=FEE)
        kes, usd = txn.ledger_transfers
        assert (kes.id, kes.kind, kes.transaction_id) == (f"{txn.id}:kes", TransferKind.PENDING, txn.id)
        assert kes.postings == (
            Posting(ledger.MPESA_COLLECTIONS.code, ledger.FX_KES.code, Money.kes(980)),
            Posting(ledger.MPESA_COLLECTIONS.code, ledger.FEES_KES.code, Money.kes(20)),
        )
        assert (usd.id, usd.kind) == (f"{txn.id}:usd", TransferKind.PENDING)
        assert usd.postings == (Posting(ledger.FX_USD.code, ledger.DERIV_AGENT.code, txn.amount_usd),)
        assert txn.legs == {"kes": P, "usd": P}

    def test_without_a_fee_there_is_no_fee_posting(self) -> None:
        (kes, _usd) = a_deposit(amount_kes=1_000).ledger_transfers
        assert [p.credit for p in kes.postings] == [ledger.FX_KES.code]

    def test_an_expired_quote_is_refused(self) -> None:
        with pytest.raises(QuoteExpired):
            a_deposit(quote=a_quote(issued_at=NOW - timedelta(minutes=5)), now=NOW)

    @pytest.mark.parametrize("amount", [0, -100])
    def test_a_deposit_is_a_positive_amount(self, amount: int) -> None:
        with pytest.raises(InvalidAmount, match="positive"):
            a_deposit(amount_kes=amount)

    def test_a_deposit_too_small_to_buy_a_cent_after_fees_is_refused(self) -> None:
        with pytest.raises(InvalidAmount, match="too small"):
            a_deposit(amount_kes=1)


class TestNewWithdrawal:
    def test_a_withdrawal_starts_pending_paying_out_the_gross_less_the_fee(self) -> None:
        quote = a_quote(mid="129.50", spread_bps=150)
        txn = a_withdrawal(amount_usd_cents=1_000, quote=quote, fee_policy=FEE)
        assert (txn.kind, txn.status) == (Kind.WITHDRAWAL, S.PENDING)
        # 10.00 USD at 127.5575 = 1275 KES gross; fee 19.125 -> 20 + 5 = 25
        assert txn.fee == Money.kes(25)
        assert txn.amount_kes == Money.kes(1_250)
        assert txn.fx_rate == quote.applied_rate(Side.CUSTOMER_SELLS_USD)
        (event,) = txn.events
        assert type(event) is ev.WithdrawalRequested

    def test_creation_reserves_both_legs(self) -> None:
        txn = a_withdrawal(amount_usd_cents=1_000, fee_policy=FEE)
        usd, kes = txn.ledger_transfers
        assert usd.postings == (Posting(ledger.DERIV_AGENT.code, ledger.FX_USD.code, Money.usd_cents(1_000)),)
        assert kes.postings == (
            Posting(ledger.FX_KES.code, ledger.MPESA_DISBURSEMENTS.code, Money.kes(1_250)),
            Posting(ledger.FX_KES.code, ledger.FEES_KES.code, Money.kes(25)),
        )
        assert {t.kind for t in (usd, kes)} == {TransferKind.PENDING}

    def test_a_withdrawal_is_a_positive_amount_of_usd(self) -> None:
        with pytest.raises(InvalidAmount, match="positive amount of USD"):
            a_withdrawal(amount_usd_cents=0)

    def test_a_withdrawal_too_small_to_pay_anything_after_fees_is_refused(self) -> None:
        with pytest.raises(InvalidAmount, match="too small"):
            a_withdrawal(amount_usd_cents=1, fee_policy=FeePolicy(minimum_kes=5))


class TestDepositFlows:
    @pytest.mark.parametrize("path", DEPOSIT_PATHS.values(), ids=DEPOSIT_PATHS.keys())
    def test_each_step_emits_one_event_and_leaves_the_legs_its_status_implies(self, path: Path) -> None:
        walk(a_deposit(amount_kes=1_000, fee_policy=FEE), path)

    def test_a_completed_deposit_moved_the_kes_in_and_the_usd_out(self) -> None:
        txn = a_deposit(amount_kes=1_000, fee_policy=FEE)
        book = walk(txn, DEPOSIT_PATHS["happy path"])
        assert (txn.mpesa_checkout_request_id, txn.mpesa_receipt) == ("ws_CO_191220191020363925", "SLK1A2B3C4")
        assert txn.deriv_transaction_id == "D-1001"
        assert book.balance(ledger.MPESA_COLLECTIONS) == Money.kes(1_000)
        assert book.balance(ledger.FEES_KES) == Money.kes(-20)  # revenue is credit-normal
        assert book.balance(ledger.DERIV_AGENT) == BIG_FLOAT_USD - txn.amount_usd

    def test_a_failed_payment_releases_both_reservations(self) -> None:
        txn = a_deposit()
        book = walk(txn, DEPOSIT_PATHS["payment failed"])
        assert (txn.failure_code, txn.failure_reason) == ("1032", "Request cancelled by user")
        assert book.accounts[ledger.DERIV_AGENT.code].available == BIG_FLOAT_USD
        assert book.balance(ledger.MPESA_COLLECTIONS) == Money.kes(0)

    def test_a_refunded_deposit_owes_nothing_and_paid_the_money_back(self) -> None:
        txn = a_deposit(amount_kes=1_000, fee_policy=FEE)
        book = walk(txn, DEPOSIT_PATHS["credit rejected then refunded"][:4])
        assert txn.failure_code == "PaymentAgentTransferError"
        assert book.balance(ledger.CLEARING_KES) == Money.kes(-1_000)  # owed to the payer, fee included
        txn.refund_accepted(payout_id=PayoutId("01HXREFUND0000000000"), conversation_id="AG_R_1")
        assert (txn.refund_payout_id, txn.b2c_conversation_id) == ("01HXREFUND0000000000", "AG_R_1")
        assert txn.pull_events() == [] and txn.pull_ledger_transfers() == []
        refunded(txn, NOW + timedelta(minutes=1))
        book.apply_all(txn.pull_ledger_transfers())
        assert txn.b2c_receipt == "SLK9R8F7U6"
        assert book.balance(ledger.CLEARING_KES) == Money.kes(0)
        assert book.balance(ledger.MPESA_DISBURSEMENTS) == BIG_FLOAT_KES - Money.kes(1_000)
        assert book.balance(ledger.DERIV_AGENT) == BIG_FLOAT_USD

    def test_the_failure_event_carries_the_provider_code(self) -> None:
        txn = a_deposit()
        txn.pull_events()
        payment_failed(txn, NOW)
        (event,) = txn.events
        assert event.detail == "1032"

    def test_review_keeps_every_reservation_and_emits_no_transfer(self) -> None:
        txn = a_deposit()
        walk(txn, DEPOSIT_PATHS["happy path"][:3])
        flagged(txn, NOW + timedelta(minutes=1))
        assert txn.pull_ledger_transfers() == []
        assert txn.legs == {"kes": X, "usd": P}
        assert txn.review_reason == "no answer from Deriv after 3 queries"
        (event,) = txn.pull_events()
        assert event.detail == "no answer from Deriv after 3 queries"

    def test_resolving_clears_the_review_and_records_who_decided(self) -> None:
        txn = a_deposit()
        walk(txn, DEPOSIT_PATHS["review while crediting, resolved as credited"][:4])
        resolved(S.COMPLETED)(txn, NOW + timedelta(minutes=1))
        (event,) = txn.pull_events()
        assert event.detail == "resolved by admin@penpay: checked at the provider"
        assert txn.review_reason is None

    def test_a_confirmation_for_a_different_amount_is_refused_and_changes_nothing(self) -> None:
        txn = a_deposit(amount_kes=1_000)
        stk_accepted(txn, NOW)
        before = snapshot(txn)
        with pytest.raises(InvalidAmount, match="paid 999 KES, expected 1000 KES") as caught:
            txn.confirm_payment(receipt="SLK1A2B3C4", amount=Money.kes(999), now=NOW)
        assert caught.value.details == {"expected": 1_000}
        assert snapshot(txn) == before

    def test_a_confirmation_needs_a_receipt(self) -> None:
        txn = a_deposit()
        stk_accepted(txn, NOW)
        with pytest.raises(InvalidInput, match="receipt"):
            txn.confirm_payment(receipt="", amount=txn.amount_kes, now=NOW)

    def test_an_stk_push_needs_its_checkout_request_id(self) -> None:
        with pytest.raises(InvalidInput, match="CheckoutRequestID"):
            a_deposit().stk_push_accepted("", NOW)

    def test_the_update_time_never_goes_backwards(self) -> None:
        txn = a_deposit(now=NOW)
        stk_accepted(txn, NOW - timedelta(seconds=30))
        assert txn.updated_at == NOW


class TestWithdrawalFlows:
    @pytest.mark.parametrize("path", WITHDRAWAL_PATHS.values(), ids=WITHDRAWAL_PATHS.keys())
    def test_each_step_emits_one_event_and_leaves_the_legs_its_status_implies(self, path: Path) -> None:
        walk(a_withdrawal(amount_usd_cents=1_000, fee_policy=FEE), path)

    def test_a_completed_withdrawal_moved_the_usd_in_and_the_kes_out(self) -> None:
        txn = a_withdrawal(amount_usd_cents=1_000, fee_policy=FEE)
        book = walk(txn, WITHDRAWAL_PATHS["happy path"])
        assert (txn.deriv_transaction_id, txn.payout_id, txn.mpesa_receipt) == (
            "D-2001",
            "01HX0000000000000000",
            "SLK5P4O3U2",
        )
        assert txn.b2c_conversation_id == "AG_20240501_1"
        assert book.balance(ledger.DERIV_AGENT) == BIG_FLOAT_USD + Money.usd_cents(1_000)
        assert book.balance(ledger.MPESA_DISBURSEMENTS) == BIG_FLOAT_KES - Money.kes(1_250)
        assert book.balance(ledger.FEES_KES) == Money.kes(-25)

    def test_a_rejected_debit_releases_both_reservations(self) -> None:
        txn = a_withdrawal()
        book = walk(txn, WITHDRAWAL_PATHS["debit rejected"])
        assert txn.failure_code == "InvalidVerificationCode"
        assert book.accounts[ledger.MPESA_DISBURSEMENTS.code].available == BIG_FLOAT_KES
        assert book.balance(ledger.DERIV_AGENT) == BIG_FLOAT_USD

    def test_a_reversed_withdrawal_gave_the_dollars_back(self) -> None:
        txn = a_withdrawal(amount_usd_cents=1_000)
        book = walk(txn, WITHDRAWAL_PATHS["payout failed then reversed"])
        assert (txn.failure_code, txn.reversal_deriv_transaction_id) == ("2001", "D-2002")
        assert book.balance(ledger.DERIV_AGENT) == BIG_FLOAT_USD
        assert book.balance(ledger.CLEARING_USD) == Money.usd_cents(0)
        assert book.balance(ledger.MPESA_DISBURSEMENTS) == BIG_FLOAT_KES


ALL_STEPS: list[Step] = [
    stk_accepted,
    paid,
    payment_failed,
    credit_started,
    credited,
    credit_rejected,
    refunded,
    debit_started,
    debited,
    debit_rejected,
    payout_accepted,
    paid_out,
    payout_failed,
    reversed_,
    flagged,
    *(resolved(s) for s in Status),
    *(retried(s) for s in Status),
]


def reach(kind: Kind, path_name: str) -> Transaction:
    txn = a_deposit() if kind is Kind.DEPOSIT else a_withdrawal()
    walk(txn, (DEPOSIT_PATHS if kind is Kind.DEPOSIT else WITHDRAWAL_PATHS)[path_name])
    return txn


class TestIllegalTransitions:
    @pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.__name__)
    @pytest.mark.parametrize(
        ("kind", "path_name"),
        [
            (Kind.DEPOSIT, "happy path"),
            (Kind.DEPOSIT, "payment failed"),
            (Kind.DEPOSIT, "credit rejected then refunded"),
            (Kind.WITHDRAWAL, "happy path"),
            (Kind.WITHDRAWAL, "debit rejected"),
            (Kind.WITHDRAWAL, "payout failed then reversed"),
        ],
    )
    def test_a_terminal_transaction_refuses_every_step_and_stays_unchanged(
        self, kind: Kind, path_name: str, step: Step
    ) -> None:
        txn = reach(kind, path_name)
        assert txn.is_terminal
        before = snapshot(txn)
        with pytest.raises(IllegalTransition):
            step(txn, NOW + timedelta(hours=1))
        assert snapshot(txn) == before

    @pytest.mark.parametrize(
        "step",
        [paid, credit_started, credited, credit_rejected, refunded, resolved(S.COMPLETED)],
        ids=lambda s: s.__name__,
    )
    def test_a_new_deposit_cannot_skip_ahead(self, step: Step) -> None:
        txn = a_deposit()
        before = snapshot(txn)
        with pytest.raises(IllegalTransition):
            step(txn, NOW)
        assert snapshot(txn) == before

    @pytest.mark.parametrize(
        "step",
        [debit_started, debited, debit_rejected, payout_accepted, paid_out, payout_failed, reversed_],
        ids=lambda s: s.__name__,
    )
    def test_a_deposit_refuses_withdrawal_steps(self, step: Step) -> None:
        txn = a_deposit()
        before = snapshot(txn)
        with pytest.raises(IllegalTransition, match="is a deposit, not a withdrawal"):
            step(txn, NOW)
        assert snapshot(txn) == before

    @pytest.mark.parametrize(
        "step",
        [stk_accepted, paid, payment_failed, credit_started, credited, credit_rejected, refunded],
        ids=lambda s: s.__name__,
    )
    def test_a_withdrawal_refuses_deposit_steps(self, step: Step) -> None:
        txn = a_withdrawal()
        before = snapshot(txn)
        with pytest.raises(IllegalTransition, match="is a withdrawal, not a deposit"):
            step(txn, NOW)
        assert snapshot(txn) == before

    def test_the_error_names_both_statuses(self) -> None:
        with pytest.raises(IllegalTransition) as caught:
            credited(a_deposit(), NOW)
        assert caught.value.details == {"from_status": "PENDING", "to_status": "COMPLETED"}
        assert caught.value.code == "illegal_transition"

    def test_a_refund_can_only_be_accepted_while_refunding(self) -> None:
        txn = a_deposit()
        with pytest.raises(IllegalTransition, match="not refunding"):
            txn.refund_accepted(payout_id=PayoutId("X"), conversation_id="Y")

    def test_only_a_transaction_under_review_can_be_resolved_or_retried(self) -> None:
        txn = a_deposit()
        with pytest.raises(IllegalTransition, match="only a NEEDS_REVIEW"):
            resolved(S.PAYMENT_FAILED)(txn, NOW)
        with pytest.raises(IllegalTransition, match="only a NEEDS_REVIEW"):
            retried(S.AWAITING_PAYMENT)(txn, NOW)

    def test_a_retry_cannot_jump_to_a_final_outcome(self) -> None:
        txn = a_deposit()
        walk(txn, DEPOSIT_PATHS["review while crediting, resolved as credited"][:4])
        with pytest.raises(IllegalTransition, match="use resolve"):
            retried(S.COMPLETED)(txn, NOW)

    @pytest.mark.parametrize(
        ("kind", "path_name", "steps", "wrong_outcome"),
        [
            # the payment was posted before review: "payment failed" would unpost money M-Pesa has collected
            (Kind.DEPOSIT, "review while crediting, resolved as credited", 4, S.PAYMENT_FAILED),
            # the refund was already under way: Deriv cannot be credited with money that is being returned
            (Kind.DEPOSIT, "review while refunding, retried", 5, S.COMPLETED),
            # Deriv was debited before review: "failed" would void a posted debit
            (Kind.WITHDRAWAL, "review while paying out, resolved as paid", 4, S.FAILED),
        ],
    )
    def test_a_resolution_the_ledger_cannot_follow_is_refused_and_changes_nothing(
        self, kind: Kind, path_name: str, steps: int, wrong_outcome: Status
    ) -> None:
        txn = a_deposit() if kind is Kind.DEPOSIT else a_withdrawal()
        paths = DEPOSIT_PATHS if kind is Kind.DEPOSIT else WITHDRAWAL_PATHS
        walk(txn, paths[path_name][:steps])
        assert txn.status is S.NEEDS_REVIEW
        before = snapshot(txn)
        with pytest.raises(IllegalTransition, match="ledger leg"):
            resolved(wrong_outcome)(txn, NOW + timedelta(hours=1))
        assert snapshot(txn) == before


class TestResolvedFailures:
    """A customer whose transaction support settled as failed is told why, in words meant for them."""

    @pytest.mark.parametrize(
        ("kind", "path_name", "status"),
        [
            (Kind.DEPOSIT, "review while awaiting payment, resolved as failed", S.PAYMENT_FAILED),
            (Kind.DEPOSIT, "review while crediting, resolved as refunding", S.REFUNDING),
            (Kind.WITHDRAWAL, "review while debiting, resolved as failed", S.FAILED),
            (Kind.WITHDRAWAL, "review while paying out, resolved as reversing", S.REVERSING),
        ],
    )
    def test_the_outcome_is_the_failure_reason_and_the_admins_note_is_not(
        self, kind: Kind, path_name: str, status: Status
    ) -> None:
        txn = a_deposit() if kind is Kind.DEPOSIT else a_withdrawal()
        paths = DEPOSIT_PATHS if kind is Kind.DEPOSIT else WITHDRAWAL_PATHS
        path = paths[path_name]
        until_resolved = path[: [event for _, event, _ in path].index(ev.TransactionResolved) + 1]
        walk(txn, until_resolved)
        assert txn.status is status
        assert txn.failure_code == "resolved_after_review"
        assert txn.failure_reason is not None and "PenPay support" in txn.failure_reason
        assert "checked at the provider" not in txn.failure_reason  # the admin's note is for ops (the audit log)

    def test_a_success_has_no_failure_reason(self) -> None:
        txn = a_deposit()
        walk(txn, DEPOSIT_PATHS["review while crediting, resolved as credited"])
        assert (txn.failure_code, txn.failure_reason) == (None, None)

    def test_the_providers_own_reason_is_kept(self) -> None:
        txn = a_withdrawal()
        path = [
            *WITHDRAWAL_PATHS["payout failed then reversed"][:4],
            (flagged, ev.TransactionNeedsReview, S.NEEDS_REVIEW),
            (resolved(S.REVERSING), ev.TransactionResolved, S.REVERSING),
        ]
        walk(txn, path)
        assert (txn.failure_code, txn.failure_reason) == ("2001", "The initiator information is invalid")
