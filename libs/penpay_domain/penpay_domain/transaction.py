"""The ``Transaction`` aggregate: a deposit or a withdrawal, its state machine, its ledger legs and its events.

Every state change goes through ``_transition``, which checks ``TRANSITIONS``, stamps the time, bumps nothing but
the in-memory state, records a domain event and the ledger transfers that the new state implies. The unit of work
persists all three in one database transaction (optimistic ``version`` check included).

Ledger legs (transfer ids are ``<transaction id>:<leg>``):

deposit of K KES (fee F) crediting U USD
  ``kes``     pending at creation: collections -> fx:KES (K-F) and -> fees:KES (F); posted when paid, voided on
              payment failure
  ``usd``     pending at creation (reserves the agent balance): fx:USD -> deriv:agent (U); posted when Deriv credited,
              voided on payment failure or a Deriv rejection
  ``owed``    on a Deriv rejection: fx:KES and fees:KES -> clearing:KES (K), PenPay now owes the payer K
  ``refund``  pending B2C refund: clearing:KES -> mpesa:disbursements (K); posted when refunded

withdrawal of U USD paying out K KES (gross G = K + F)
  ``usd``       pending at creation: deriv:agent -> fx:USD (U); posted when Deriv debited, voided if rejected
  ``kes``       pending at creation (reserves B2C money): fx:KES -> disbursements (K) and -> fees:KES (F); posted when
                paid out, voided if the debit is rejected or the payout fails
  ``owed``      on payout failure: fx:USD -> clearing:USD (U)
  ``reversal``  pending transfer back to the customer: clearing:USD -> deriv:agent (U); posted when reversed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from penpay_domain import events as ev
from penpay_domain import ledger
from penpay_domain.errors import IllegalTransition, InvalidAmount, InvalidInput
from penpay_domain.fees import FeePolicy
from penpay_domain.fx import LockedRate, Side
from penpay_domain.ids import DerivLoginId, PayoutId, TransactionId, UserId
from penpay_domain.money import Currency, Money
from penpay_domain.msisdn import Msisdn


class Kind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


class Status(StrEnum):
    PENDING = "PENDING"
    # deposit
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    PAYMENT_RECEIVED = "PAYMENT_RECEIVED"
    CREDITING = "CREDITING"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"
    # withdrawal
    DEBITING = "DEBITING"
    DEBITED = "DEBITED"
    PAYING_OUT = "PAYING_OUT"
    FAILED = "FAILED"
    REVERSING = "REVERSING"
    REVERSED = "REVERSED"
    # both
    COMPLETED = "COMPLETED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


S = Status

RESOLVED_FAILURE_CODE = "resolved_after_review"
# What a customer is told when PenPay's support settles a transaction under review as failed (and no provider
# already said why): the outcome in plain words, never the admin's internal note.
RESOLVED_FAILURES: Mapping[Status, str] = {
    S.PAYMENT_FAILED: "The M-Pesa payment was not received; PenPay support confirmed this after review.",
    S.REFUNDING: "The deposit could not be credited to Deriv; after review PenPay support refunds it to M-Pesa.",
    S.FAILED: "The withdrawal was not taken from the Deriv account; PenPay support confirmed this after review.",
    S.REVERSING: "The M-Pesa payout could not be made; after review PenPay support returns the dollars to Deriv.",
}
TRANSITIONS: Mapping[Kind, Mapping[Status, frozenset[Status]]] = {
    Kind.DEPOSIT: {
        S.PENDING: frozenset({S.AWAITING_PAYMENT, S.PAYMENT_FAILED, S.NEEDS_REVIEW}),
        S.AWAITING_PAYMENT: frozenset({S.PAYMENT_RECEIVED, S.PAYMENT_FAILED, S.NEEDS_REVIEW}),
        S.PAYMENT_RECEIVED: frozenset({S.CREDITING, S.NEEDS_REVIEW}),
        S.CREDITING: frozenset({S.COMPLETED, S.REFUNDING, S.NEEDS_REVIEW}),
        S.REFUNDING: frozenset({S.REFUNDED, S.NEEDS_REVIEW}),
        S.NEEDS_REVIEW: frozenset({S.COMPLETED, S.REFUNDING, S.PAYMENT_FAILED, S.CREDITING}),
        S.COMPLETED: frozenset(),
        S.PAYMENT_FAILED: frozenset(),
        S.REFUNDED: frozenset(),
    },
    Kind.WITHDRAWAL: {
        S.PENDING: frozenset({S.DEBITING, S.FAILED, S.NEEDS_REVIEW}),
        S.DEBITING: frozenset({S.DEBITED, S.FAILED, S.NEEDS_REVIEW}),
        S.DEBITED: frozenset({S.PAYING_OUT, S.REVERSING, S.NEEDS_REVIEW}),
        S.PAYING_OUT: frozenset({S.COMPLETED, S.REVERSING, S.NEEDS_REVIEW}),
        S.REVERSING: frozenset({S.REVERSED, S.NEEDS_REVIEW}),
        S.NEEDS_REVIEW: frozenset({S.COMPLETED, S.FAILED, S.REVERSING, S.DEBITED, S.PAYING_OUT}),
        S.COMPLETED: frozenset(),
        S.FAILED: frozenset(),
        S.REVERSED: frozenset(),
    },
}
TERMINAL: frozenset[Status] = frozenset(
    status for table in TRANSITIONS.values() for status, nxt in table.items() if not nxt
)


class LegState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"


@dataclass(frozen=True, slots=True, kw_only=True)
class Parties:
    """Who: the PenPay user, the phone that pays or is paid, the Deriv account credited or debited."""

    user_id: UserId
    msisdn: Msisdn
    deriv_loginid: DerivLoginId


@dataclass(eq=False, kw_only=True)
class Transaction:
    id: TransactionId
    kind: Kind
    status: Status
    parties: Parties
    amount_kes: Money
    amount_usd: Money
    fee: Money
    quote: LockedRate
    fx_rate: Decimal
    created_at: datetime
    updated_at: datetime
    version: int = 0
    mpesa_checkout_request_id: str | None = None
    mpesa_receipt: str | None = None
    payout_id: PayoutId | None = None
    b2c_conversation_id: str | None = None
    deriv_transaction_id: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    review_reason: str | None = None
    stk_requested_at: datetime | None = None
    refund_payout_id: PayoutId | None = None
    b2c_receipt: str | None = None
    reversal_deriv_transaction_id: str | None = None
    legs: dict[str, LegState] = field(default_factory=dict)
    events: list[ev.TransactionEvent] = field(default_factory=list, repr=False)
    ledger_transfers: list[ledger.Transfer] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------------------------------ creation
    @classmethod
    def new_deposit(
        cls,
        *,
        id: TransactionId,
        parties: Parties,
        amount_kes: Money,
        quote: LockedRate,
        fee_policy: FeePolicy,
        now: datetime,
    ) -> Transaction:
        if amount_kes.currency is not Currency.KES or not amount_kes.is_positive:
            raise InvalidAmount("a deposit is a positive whole number of KES")
        quote.ensure_valid(now)
        fee = fee_policy.fee_for(amount_kes)
        amount_usd = quote.kes_to_usd(amount_kes - fee)
        if not amount_usd.is_positive:
            raise InvalidAmount(f"{amount_kes} is too small to buy any USD after fees")
        txn = cls(
            id=id,
            kind=Kind.DEPOSIT,
            status=Status.PENDING,
            parties=parties,
            amount_kes=amount_kes,
            amount_usd=amount_usd,
            fee=fee,
            quote=quote,
            fx_rate=quote.applied_rate(Side.CUSTOMER_BUYS_USD),
            created_at=now,
            updated_at=now,
        )
        txn._converge_legs()
        txn._record(ev.DepositRequested, None, now)
        return txn

    @classmethod
    def new_withdrawal(
        cls,
        *,
        id: TransactionId,
        parties: Parties,
        amount_usd: Money,
        quote: LockedRate,
        fee_policy: FeePolicy,
        now: datetime,
    ) -> Transaction:
        if amount_usd.currency is not Currency.USD or not amount_usd.is_positive:
            raise InvalidAmount("a withdrawal is a positive amount of USD")
        quote.ensure_valid(now)
        gross = quote.usd_to_kes(amount_usd)
        fee = fee_policy.fee_for(gross)
        payout = gross - fee
        if not payout.is_positive:
            raise InvalidAmount(f"{amount_usd} is too small to pay out any KES after fees")
        txn = cls(
            id=id,
            kind=Kind.WITHDRAWAL,
            status=Status.PENDING,
            parties=parties,
            amount_kes=payout,
            amount_usd=amount_usd,
            fee=fee,
            quote=quote,
            fx_rate=quote.applied_rate(Side.CUSTOMER_SELLS_USD),
            created_at=now,
            updated_at=now,
        )
        txn._converge_legs()
        txn._record(ev.WithdrawalRequested, None, now)
        return txn

    # ------------------------------------------------------------------------------------------ queries
    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def can_move_to(self, status: Status) -> bool:
        return status in TRANSITIONS[self.kind][self.status]

    def leg_id(self, leg: str) -> str:
        return f"{self.id}:{leg}"

    def pull_events(self) -> list[ev.TransactionEvent]:
        out, self.events = self.events, []
        return out

    def pull_ledger_transfers(self) -> list[ledger.Transfer]:
        out, self.ledger_transfers = self.ledger_transfers, []
        return out

    # ------------------------------------------------------------------------------------------ deposit
    def request_stk_push(self, now: datetime) -> None:
        """Record, before calling Daraja, that a push is being sent. STK Push has no idempotency key, so a push whose
        outcome is unknown must never be sent again: a second attempt finds this mark and stops."""
        self._require_kind(Kind.DEPOSIT)
        if self.status is not S.PENDING:
            raise IllegalTransition(f"{self.id} is {self.status.value}; only a PENDING deposit is pushed")
        if self.stk_requested_at is not None:
            raise IllegalTransition(
                f"an STK push for {self.id} was already sent at {self.stk_requested_at.isoformat()}"
            )
        self.stk_requested_at = now
        self.updated_at = max(now, self.updated_at)

    def stk_push_outcome_unknown(self, now: datetime) -> None:
        """The push may have reached the phone but Daraja's answer was lost: wait for the callback (its URL names this
        transaction), never re-push. Without a CheckoutRequestID there is nothing to query."""
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.AWAITING_PAYMENT, ev.StkPushAccepted, now, detail="outcome unknown")

    def stk_push_accepted(self, checkout_request_id: str, now: datetime) -> None:
        self._require_kind(Kind.DEPOSIT)
        if not checkout_request_id:
            raise InvalidInput("a CheckoutRequestID is required")
        self._transition(S.AWAITING_PAYMENT, ev.StkPushAccepted, now)
        self.mpesa_checkout_request_id = checkout_request_id

    def confirm_payment(self, *, receipt: str, amount: Money, now: datetime) -> None:
        """A verified callback (or query) says the customer paid. The amount must be exactly what was asked."""
        self._require_kind(Kind.DEPOSIT)
        if amount != self.amount_kes:
            raise InvalidAmount(f"paid {amount}, expected {self.amount_kes}", expected=self.amount_kes.minor)
        if not receipt:
            raise InvalidInput("an M-Pesa receipt is required")
        self._transition(S.PAYMENT_RECEIVED, ev.DepositPaymentReceived, now)
        self.mpesa_receipt = receipt

    def confirm_payment_by_query(self, now: datetime) -> None:
        """STK Push Query says paid (no callback came). The query carries no receipt or amount; Daraja charges exactly
        the amount pushed, and the receipt is recorded if the callback arrives later."""
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.PAYMENT_RECEIVED, ev.DepositPaymentReceived, now, detail="confirmed by STK Push Query")

    def record_receipt(self, receipt: str) -> bool:
        """A late callback brings the receipt of a payment confirmed by query. False if one was already recorded."""
        if not receipt:
            raise InvalidInput("an M-Pesa receipt is required")
        if self.mpesa_receipt is not None:
            return False
        self.mpesa_receipt = receipt
        return True

    def fail_payment(self, *, code: str, reason: str, now: datetime) -> None:
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.PAYMENT_FAILED, ev.DepositPaymentFailed, now, detail=code)
        self._set_failure(code, reason)

    def start_credit(self, now: datetime) -> None:
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.CREDITING, ev.DerivCreditStarted, now)

    def complete_credit(self, *, deriv_transaction_id: str, now: datetime) -> None:
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.COMPLETED, ev.DepositCompleted, now)
        self.deriv_transaction_id = deriv_transaction_id

    def reject_credit(self, *, code: str, reason: str, now: datetime) -> None:
        """Deriv refused the credit: nothing moved there, so the payer is refunded over B2C."""
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.REFUNDING, ev.DerivCreditRejected, now, detail=code)
        self._set_failure(code, reason)

    def prepare_refund(self, payout_id: PayoutId) -> PayoutId:
        """Fix the refund's OriginatorConversationID before the first B2C request, so every resend carries the same
        one (Daraja refuses a duplicate instead of paying twice). Returns the id in force."""
        self._require_kind(Kind.DEPOSIT)
        if self.status is not S.REFUNDING:
            raise IllegalTransition(f"{self.id} is not refunding")
        if self.refund_payout_id is None:
            self.refund_payout_id = payout_id
        return self.refund_payout_id

    def refund_accepted(self, *, payout_id: PayoutId, conversation_id: str) -> None:
        """Daraja accepted the refund B2C: remember its ids (no state change; the result callback finishes it)."""
        self._require_kind(Kind.DEPOSIT)
        if self.status is not S.REFUNDING:
            raise IllegalTransition(f"{self.id} is not refunding")
        self.refund_payout_id = payout_id
        self.b2c_conversation_id = conversation_id

    def complete_refund(self, *, receipt: str, now: datetime) -> None:
        self._require_kind(Kind.DEPOSIT)
        self._transition(S.REFUNDED, ev.DepositRefunded, now)
        self.b2c_receipt = receipt

    # ------------------------------------------------------------------------------------------ withdrawal
    def start_debit(self, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.DEBITING, ev.DerivDebitStarted, now)

    def complete_debit(self, *, deriv_transaction_id: str, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.DEBITED, ev.WithdrawalDebited, now)
        self.deriv_transaction_id = deriv_transaction_id

    def reject_debit(self, *, code: str, reason: str, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.FAILED, ev.WithdrawalFailed, now, detail=code)
        self._set_failure(code, reason)

    def prepare_payout(self, payout_id: PayoutId) -> PayoutId:
        """Fix the payout's OriginatorConversationID before the first B2C request (see ``prepare_refund``)."""
        self._require_kind(Kind.WITHDRAWAL)
        if self.status is not S.DEBITED:
            raise IllegalTransition(f"{self.id} is {self.status.value}; only a DEBITED withdrawal is paid out")
        if self.payout_id is None:
            self.payout_id = payout_id
        return self.payout_id

    def payout_outcome_unknown(self, now: datetime) -> None:
        """The B2C request may have reached Daraja: treat it as sent and let the result (or Transaction Status) say."""
        self._require_kind(Kind.WITHDRAWAL)
        if self.payout_id is None:
            raise IllegalTransition(f"{self.id} has no payout id")
        self._transition(S.PAYING_OUT, ev.PayoutAccepted, now, detail="outcome unknown")

    def payout_accepted(self, *, payout_id: PayoutId, conversation_id: str, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.PAYING_OUT, ev.PayoutAccepted, now)
        self.payout_id = payout_id
        self.b2c_conversation_id = conversation_id

    def complete_payout(self, *, receipt: str, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.COMPLETED, ev.WithdrawalCompleted, now)
        self.mpesa_receipt = receipt

    def fail_payout(self, *, code: str, reason: str, now: datetime) -> None:
        """B2C failed after Deriv was debited: give the customer's dollars back (paymentagent_transfer)."""
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.REVERSING, ev.PayoutFailed, now, detail=code)
        self._set_failure(code, reason)

    def complete_reversal(self, *, deriv_transaction_id: str, now: datetime) -> None:
        self._require_kind(Kind.WITHDRAWAL)
        self._transition(S.REVERSED, ev.WithdrawalReversed, now)
        self.reversal_deriv_transaction_id = deriv_transaction_id

    # ------------------------------------------------------------------------------------------ both
    def flag_for_review(self, *, reason: str, now: datetime) -> None:
        """The outcome is unknown after reconciliation: stop, keep every reservation, and ask a human."""
        self._transition(S.NEEDS_REVIEW, ev.TransactionNeedsReview, now, detail=reason)
        self.review_reason = reason

    def resolve(self, status: Status, *, now: datetime, by: str, note: str) -> None:
        """An admin settles a NEEDS_REVIEW transaction with the outcome found at the provider (``…/resolve``).

        The ledger follows the decision (pending legs posted or voided, refund/reversal legs opened); a decision
        the ledger cannot follow (e.g. "payment failed" after the payment was posted) is refused. Settled as failed
        with no provider's reason on record, the customer's ``failure_reason`` says what happened
        (``RESOLVED_FAILURES``); ``note`` is for ops and goes to the audit log only.
        """
        if self.status is not S.NEEDS_REVIEW:
            raise IllegalTransition(f"only a NEEDS_REVIEW transaction can be resolved (this one is {self.status})")
        self._transition(status, ev.TransactionResolved, now, detail=f"resolved by {by}: {note}")
        self.review_reason = None
        outcome = RESOLVED_FAILURES.get(status)
        if outcome is not None and self.failure_reason is None:
            # The customer sees why it failed; the admin's note (internal) stays in the audit log.
            self._set_failure(RESOLVED_FAILURE_CODE, outcome)

    def resume(self, status: Status, *, now: datetime, by: str) -> None:
        """An admin sends a NEEDS_REVIEW transaction back into the flow (``…/retry``) at a non-terminal status."""
        if self.status is not S.NEEDS_REVIEW:
            raise IllegalTransition(f"only a NEEDS_REVIEW transaction can be retried (this one is {self.status})")
        if status in TERMINAL:
            raise IllegalTransition("retry resumes the flow; use resolve for a final outcome")
        self._transition(status, ev.TransactionResolved, now, detail=f"retry by {by}")
        self.review_reason = None

    # ------------------------------------------------------------------------------------------ internals
    def _require_kind(self, kind: Kind) -> None:
        if self.kind is not kind:
            raise IllegalTransition(f"{self.id} is a {self.kind.value}, not a {kind.value}")

    def _transition(self, to: Status, event: type[ev.TransactionEvent], now: datetime, *, detail: str = "") -> None:
        if not self.can_move_to(to):
            raise IllegalTransition(
                f"{self.kind.value} {self.id} cannot go from {self.status.value} to {to.value}",
                from_status=self.status.value,
                to_status=to.value,
            )
        before, updated_at, legs = self.status, self.updated_at, dict(self.legs)
        n_transfers = len(self.ledger_transfers)
        self.status = to
        self.updated_at = max(now, self.updated_at)
        try:
            self._converge_legs()
        except IllegalTransition:
            # A refused transition changes nothing (e.g. resolving "payment failed" after the payment was posted).
            self.status, self.updated_at, self.legs = before, updated_at, legs
            del self.ledger_transfers[n_transfers:]
            raise
        self._record(event, before, now, detail=detail)

    def _record(
        self, event: type[ev.TransactionEvent], before: Status | None, now: datetime, *, detail: str = ""
    ) -> None:
        self.events.append(
            event(
                transaction_id=self.id,
                occurred_at=now,
                kind=self.kind.value,
                user_id=self.parties.user_id,
                from_status=before.value if before else None,
                to_status=self.status.value,
                detail=detail,
            )
        )

    def _set_failure(self, code: str, reason: str) -> None:
        self.failure_code = code
        self.failure_reason = reason

    def _leg_postings(self, leg: str) -> tuple[ledger.Posting, ...]:
        """The postings of each ledger leg (see the module docstring)."""
        c = ledger
        fee = self.fee
        if self.kind is Kind.DEPOSIT:
            net = self.amount_kes - fee
            legs = {
                "kes": [c.Posting(c.MPESA_COLLECTIONS.code, c.FX_KES.code, net)]
                + ([c.Posting(c.MPESA_COLLECTIONS.code, c.FEES_KES.code, fee)] if fee.is_positive else []),
                "usd": [c.Posting(c.FX_USD.code, c.DERIV_AGENT.code, self.amount_usd)],
                "owed": [c.Posting(c.FX_KES.code, c.CLEARING_KES.code, net)]
                + ([c.Posting(c.FEES_KES.code, c.CLEARING_KES.code, fee)] if fee.is_positive else []),
                "refund": [c.Posting(c.CLEARING_KES.code, c.MPESA_DISBURSEMENTS.code, self.amount_kes)],
            }
        else:
            legs = {
                "usd": [c.Posting(c.DERIV_AGENT.code, c.FX_USD.code, self.amount_usd)],
                "kes": [c.Posting(c.FX_KES.code, c.MPESA_DISBURSEMENTS.code, self.amount_kes)]
                + ([c.Posting(c.FX_KES.code, c.FEES_KES.code, fee)] if fee.is_positive else []),
                "owed": [c.Posting(c.FX_USD.code, c.CLEARING_USD.code, self.amount_usd)],
                "reversal": [c.Posting(c.CLEARING_USD.code, c.DERIV_AGENT.code, self.amount_usd)],
            }
        return tuple(legs[leg])

    def _converge_legs(self) -> None:
        """Make the ledger legs match what the current status implies (``expected_legs``), by appending transfers.

        Legs only move forward: absent -> pending|posted, pending -> posted|voided. Anything else means the status
        and the ledger disagree, which is a bug or a wrong admin resolution, so it raises instead of guessing.
        """
        target = expected_legs(self.status, self.kind)
        if target is None:
            return
        for leg, want in target.items():
            have = self.legs.get(leg)
            if have is want:
                continue
            leg_id, memo = self.leg_id(leg), leg
            if have is None and want is LegState.PENDING:
                transfer = ledger.pending(leg_id, *self._leg_postings(leg), transaction_id=self.id, memo=memo)
            elif have is None and want is LegState.POSTED:
                transfer = ledger.posted(leg_id, *self._leg_postings(leg), transaction_id=self.id, memo=memo)
            elif have is LegState.PENDING and want is LegState.POSTED:
                transfer = ledger.post_pending(leg_id, transaction_id=self.id, memo=memo)
            elif have is LegState.PENDING and want is LegState.VOIDED:
                transfer = ledger.void_pending(leg_id, transaction_id=self.id, memo=memo)
            else:
                raise IllegalTransition(
                    f"{self.id}: ledger leg {leg} is {have} and cannot become {want.value} ({self.status.value})"
                )
            self.legs[leg] = want
            self.ledger_transfers.append(transfer)
        extra = set(self.legs) - set(target)
        if extra:
            raise IllegalTransition(f"{self.id}: legs {sorted(extra)} do not belong to {self.status.value}")


def expected_legs(status: Status, kind: Kind) -> dict[str, LegState] | None:
    """The ledger legs a transaction in ``status`` must have; None for NEEDS_REVIEW, which keeps whatever it had
    (reservations stay in place until a human decides)."""
    if status is S.NEEDS_REVIEW:
        return None
    p, x, v = LegState.PENDING, LegState.POSTED, LegState.VOIDED
    if kind is Kind.DEPOSIT:
        table = {
            S.PENDING: {"kes": p, "usd": p},
            S.AWAITING_PAYMENT: {"kes": p, "usd": p},
            S.PAYMENT_RECEIVED: {"kes": x, "usd": p},
            S.CREDITING: {"kes": x, "usd": p},
            S.COMPLETED: {"kes": x, "usd": x},
            S.PAYMENT_FAILED: {"kes": v, "usd": v},
            S.REFUNDING: {"kes": x, "usd": v, "owed": x, "refund": p},
            S.REFUNDED: {"kes": x, "usd": v, "owed": x, "refund": x},
        }
    else:
        table = {
            S.PENDING: {"usd": p, "kes": p},
            S.DEBITING: {"usd": p, "kes": p},
            S.DEBITED: {"usd": x, "kes": p},
            S.PAYING_OUT: {"usd": x, "kes": p},
            S.COMPLETED: {"usd": x, "kes": x},
            S.FAILED: {"usd": v, "kes": v},
            S.REVERSING: {"usd": x, "kes": v, "owed": x, "reversal": p},
            S.REVERSED: {"usd": x, "kes": v, "owed": x, "reversal": x},
        }
    return dict(table[status])
