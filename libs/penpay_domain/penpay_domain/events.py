"""Domain events: frozen, versioned, past-tense facts. They become outbox rows and then stream messages.

Every event names the transaction it concerns, so logs and handlers can follow one transaction across processes.
``to_payload``/``event_from_payload`` are the versioned wire schema (JSON-ready dicts of str/int/None).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from penpay_domain.errors import InvalidInput

# The stream of an event that no worker acts on. The streams are work queues, one per kind of work (ARCHITECTURE §5):
# such an event is recorded in the audit log as every event is, and put on none of them (nor in the outbox, which
# holds what is to be published), so no consumer reads, deduplicates and acknowledges a message only to do nothing
# with it.
RECORDED_ONLY = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    name: ClassVar[str] = "domain_event"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = RECORDED_ONLY

    @classmethod
    def is_work(cls) -> bool:
        """Whether the event goes on a stream for a worker to act on (not :data:`RECORDED_ONLY`)."""
        return cls.stream != RECORDED_ONLY

    transaction_id: str
    occurred_at: datetime

    def to_payload(self) -> dict[str, Any]:
        # the fields are flat (str/int/None and one datetime): no deep copy (``dataclasses.asdict``) needed
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["occurred_at"] = self.occurred_at.isoformat()
        return {"type": self.name, "version": self.version, **body}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionEvent(DomainEvent):
    """A transition of the transaction aggregate: which kind, from which status to which, by whom."""

    kind: str
    user_id: str
    from_status: str | None
    to_status: str
    detail: str = ""
    # The outbox row's id, assigned when the event is persisted: the message's identity on every stream, so
    # consumers deduplicate a message published twice (right after commit, and again by the relay). An event no
    # stream carries (RECORDED_ONLY) has no outbox row and keeps None.
    event_id: int | None = None


# --- deposits --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class DepositRequested(TransactionEvent):
    name: ClassVar[str] = "deposit.requested"
    stream: ClassVar[str] = "deposits"


@dataclass(frozen=True, slots=True, kw_only=True)
class StkPushAccepted(TransactionEvent):
    name: ClassVar[str] = "deposit.stk_push_accepted"
    stream: ClassVar[str] = RECORDED_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositPaymentReceived(TransactionEvent):
    name: ClassVar[str] = "deposit.payment_received"
    stream: ClassVar[str] = "deriv_transfers"


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositPaymentFailed(TransactionEvent):
    name: ClassVar[str] = "deposit.payment_failed"
    stream: ClassVar[str] = "notifications"


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivCreditStarted(TransactionEvent):
    name: ClassVar[str] = "deposit.credit_started"
    stream: ClassVar[str] = RECORDED_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositCompleted(TransactionEvent):
    name: ClassVar[str] = "deposit.completed"
    stream: ClassVar[str] = "notifications"


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivCreditRejected(TransactionEvent):
    name: ClassVar[str] = "deposit.credit_rejected"
    stream: ClassVar[str] = "withdrawals"


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositRefunded(TransactionEvent):
    name: ClassVar[str] = "deposit.refunded"
    stream: ClassVar[str] = "notifications"


# --- withdrawals -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalRequested(TransactionEvent):
    name: ClassVar[str] = "withdrawal.requested"
    stream: ClassVar[str] = "withdrawals"


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivDebitStarted(TransactionEvent):
    name: ClassVar[str] = "withdrawal.debit_started"
    stream: ClassVar[str] = RECORDED_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalDebited(TransactionEvent):
    name: ClassVar[str] = "withdrawal.debited"
    stream: ClassVar[str] = "withdrawals"


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalFailed(TransactionEvent):
    name: ClassVar[str] = "withdrawal.failed"
    stream: ClassVar[str] = "notifications"


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutAccepted(TransactionEvent):
    name: ClassVar[str] = "withdrawal.payout_accepted"
    stream: ClassVar[str] = RECORDED_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalCompleted(TransactionEvent):
    name: ClassVar[str] = "withdrawal.completed"
    stream: ClassVar[str] = "notifications"


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutFailed(TransactionEvent):
    name: ClassVar[str] = "withdrawal.payout_failed"
    stream: ClassVar[str] = "deriv_transfers"


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalReversed(TransactionEvent):
    name: ClassVar[str] = "withdrawal.reversed"
    stream: ClassVar[str] = "notifications"


# --- both ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionNeedsReview(TransactionEvent):
    name: ClassVar[str] = "transaction.needs_review"
    stream: ClassVar[str] = "notifications"


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionResolved(TransactionEvent):
    name: ClassVar[str] = "transaction.resolved"
    stream: ClassVar[str] = RECORDED_ONLY


EVENT_TYPES: dict[str, type[TransactionEvent]] = {
    cls.name: cls
    for cls in (
        DepositRequested,
        StkPushAccepted,
        DepositPaymentReceived,
        DepositPaymentFailed,
        DerivCreditStarted,
        DepositCompleted,
        DerivCreditRejected,
        DepositRefunded,
        WithdrawalRequested,
        DerivDebitStarted,
        WithdrawalDebited,
        WithdrawalFailed,
        PayoutAccepted,
        WithdrawalCompleted,
        PayoutFailed,
        WithdrawalReversed,
        TransactionNeedsReview,
        TransactionResolved,
    )
}


def event_from_payload(payload: dict[str, Any]) -> TransactionEvent:
    """Rebuild an event from its wire payload; unknown types or versions are refused, not guessed."""
    kind = payload.get("type")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise InvalidInput(f"unknown event type {kind!r}")
    if payload.get("version") != cls.version:
        raise InvalidInput(f"{kind} version {payload.get('version')!r} is not {cls.version}")
    names = {f.name for f in fields(cls)}
    body = {k: v for k, v in payload.items() if k in names}
    try:
        body["occurred_at"] = datetime.fromisoformat(str(body["occurred_at"]))
        return cls(**body)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed {kind} event: {exc}") from exc
