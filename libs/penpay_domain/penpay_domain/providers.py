"""What the outside world answers, in domain terms: the results the M-Pesa and Deriv ports return.

Unknown is a first-class outcome everywhere: a timeout never means failure, and nothing is retried blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Money


class Outcome(StrEnum):
    """How a request to a provider ended."""

    DONE = "done"  # accepted / executed
    REJECTED = "rejected"  # refused before anything moved; safe to report as failure
    UNKNOWN = "unknown"  # sent, no reliable answer: reconcile with the provider before any retry
    UNAVAILABLE = "unavailable"  # not sent (provider or gateway down): safe to retry later


class PaymentStatus(StrEnum):
    """What M-Pesa says became of a payment (STK push or B2C)."""

    PAID = "paid"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    WRONG_PIN = "wrong_pin"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    FAILED = "failed"
    PENDING = "pending"
    UNKNOWN = "unknown"

    @property
    def is_final_failure(self) -> bool:
        return self in {
            PaymentStatus.CANCELLED,
            PaymentStatus.TIMED_OUT,
            PaymentStatus.WRONG_PIN,
            PaymentStatus.INSUFFICIENT_FUNDS,
            PaymentStatus.FAILED,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StkPushResult:
    outcome: Outcome
    checkout_request_id: str | None = None
    merchant_request_id: str | None = None
    error_code: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentResult:
    """A final or interim answer about a payment: from a callback, an STK Push Query or a Transaction Status."""

    status: PaymentStatus
    result_code: str
    description: str = ""
    receipt: str | None = None
    amount: Money | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutRequestResult:
    outcome: Outcome
    conversation_id: str | None = None
    duplicate: bool = False  # Daraja already has this OriginatorConversationID: reconcile, don't resend
    error_code: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivTransferResult:
    outcome: Outcome
    deriv_transaction_id: str | None = None
    error_code: str | None = None
    message: str = ""
    refused_by: str = ""  # REJECTED: the Deriv call that refused ("authorize", "paymentagent_withdraw", ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivTransferOrder:
    """One agent -> client transfer of a batch (``DerivGateway.transfer_many``)."""

    reference: str
    loginid: DerivLoginId
    amount: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivWithdrawalOrder:
    """One client -> agent withdrawal of a batch (``DerivGateway.withdraw_many``): the client's linked token (as
    stored, encrypted) and the code Deriv e-mailed them."""

    reference: str
    loginid: DerivLoginId
    token_ciphertext: bytes
    amount: Money
    verification_code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivAccount:
    loginid: str
    currency: str
    email: str = ""
    fullname: str = ""
