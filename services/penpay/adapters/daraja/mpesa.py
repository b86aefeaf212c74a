"""``ports.Mpesa`` over the Daraja client, and Daraja's parsed callbacks as domain values.

Money safety decides every mapping here:

- A request that may have reached Daraja without an answer is ``UNKNOWN`` (never retried blindly: ask first with
  STK Push Query or Transaction Status). ``UNAVAILABLE`` only where nothing was executed and a later retry is safe
  (the connection never opened, throttling, a refused token, "system busy"). ``REJECTED`` where Daraja refused the
  request for good (nothing reached the customer's phone, nothing was paid).
- A B2C refused as a duplicate OriginatorConversationID is ``REJECTED`` with ``duplicate=True``: Daraja already
  has that payout, so its result decides; it is never resent under a new id.
- Only a zero result code is ``PAID``; an unknown code is ``FAILED`` with the raw code kept; a queue timeout or a
  failed status query is ``UNKNOWN``, never ``FAILED``.
"""

from __future__ import annotations

from collections.abc import Mapping

from penpay.adapters.daraja.client import DarajaClient
from penpay.adapters.daraja.codes import (
    DarajaAuthError,
    DarajaDuplicateError,
    DarajaError,
    DarajaOutcomeUnknown,
    DarajaRefused,
    DarajaThrottledError,
    DarajaTransientError,
)
from penpay.adapters.daraja.codes import Outcome as DarajaOutcome
from penpay.adapters.daraja.wire import (
    B2cQueueTimeout,
    B2cResult,
    Body,
    DarajaPayloadError,
    StkCallback,
    TransactionStatusResult,
    load,
    parse_b2c_result,
    parse_transaction_status_result,
)
from penpay.logging import get_logger
from penpay_domain import ports
from penpay_domain.ids import PayoutId, TransactionId
from penpay_domain.money import Currency, Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.providers import Outcome, PaymentResult, PaymentStatus, PayoutRequestResult, StkPushResult

log = get_logger(__name__)

STK_DESCRIPTION = "PenPay deposit"
INVALID_REQUEST = "invalid_request"  # refused by our own client's checks before anything was sent

# Refusals after which the same request may be sent again later: nothing was executed.
_RETRYABLE = (DarajaTransientError, DarajaThrottledError, DarajaAuthError)

_STATUS: dict[DarajaOutcome, PaymentStatus] = {
    DarajaOutcome.PAID: PaymentStatus.PAID,
    DarajaOutcome.CANCELLED: PaymentStatus.CANCELLED,
    DarajaOutcome.TIMED_OUT: PaymentStatus.TIMED_OUT,
    DarajaOutcome.WRONG_PIN: PaymentStatus.WRONG_PIN,
    DarajaOutcome.INSUFFICIENT_FUNDS: PaymentStatus.INSUFFICIENT_FUNDS,
    DarajaOutcome.REJECTED: PaymentStatus.FAILED,
    DarajaOutcome.FAILED: PaymentStatus.FAILED,
    DarajaOutcome.PENDING: PaymentStatus.PENDING,
    DarajaOutcome.UNKNOWN: PaymentStatus.UNKNOWN,
}


def payment_status(outcome: DarajaOutcome) -> PaymentStatus:
    return _STATUS[outcome]


def account_reference(txn_id: TransactionId) -> str:
    """What the customer's STK prompt shows (Daraja keeps 12 characters): the random tail of the ULID."""
    return f"PP{txn_id[-10:]}"


def _kes(amount: Money) -> int:
    if amount.currency is not Currency.KES:
        raise ValueError(f"M-Pesa moves shillings, not {amount.currency}")
    return amount.minor


class DarajaMpesa:
    """The M-Pesa port. It never raises for a provider's answer: every ending is a result with an outcome."""

    def __init__(self, client: DarajaClient) -> None:
        self._client = client

    async def ready(self) -> bool:
        try:
            await self._client.access_token()
        except _RETRYABLE as exc:
            log.warning("daraja_not_ready", error=str(exc))
            return False
        return True

    async def stk_push(
        self, *, txn_id: TransactionId, amount: Money, msisdn: Msisdn, callback_url: str
    ) -> StkPushResult:
        try:
            accepted = await self._client.stk_push(
                amount_kes=_kes(amount),
                msisdn=msisdn,
                account_reference=account_reference(txn_id),
                description=STK_DESCRIPTION,
                callback_url=callback_url,
            )
        except DarajaOutcomeUnknown as exc:
            log.warning("stk_push_outcome_unknown", transaction_id=txn_id, error=str(exc))
            return StkPushResult(outcome=Outcome.UNKNOWN, message=str(exc))
        except _RETRYABLE as exc:
            return StkPushResult(outcome=Outcome.UNAVAILABLE, error_code=exc.error_code or None, message=str(exc))
        except DarajaRefused as exc:
            return StkPushResult(outcome=Outcome.REJECTED, error_code=exc.error_code or None, message=exc.error_message)
        except (ValueError, TypeError) as exc:
            return StkPushResult(outcome=Outcome.REJECTED, error_code=INVALID_REQUEST, message=str(exc))
        return StkPushResult(
            outcome=Outcome.DONE,
            checkout_request_id=accepted.checkout_request_id,
            merchant_request_id=accepted.merchant_request_id,
            message=accepted.customer_message or accepted.response_description,
        )

    async def stk_query(self, *, checkout_request_id: str) -> PaymentResult:
        """STK Push Query: PENDING while the customer has not answered; UNKNOWN when the query itself failed."""
        try:
            answer = await self._client.stk_query(checkout_request_id=checkout_request_id)
        except DarajaError as exc:
            code = exc.error_code if isinstance(exc, DarajaRefused) else ""
            return PaymentResult(status=PaymentStatus.UNKNOWN, result_code=code or "query_failed", description=str(exc))
        return PaymentResult(
            status=payment_status(answer.outcome),
            result_code=answer.result_code or answer.outcome.value,
            description=answer.result_desc,
        )

    async def b2c_payout(
        self,
        *,
        payout_id: PayoutId,
        amount: Money,
        msisdn: Msisdn,
        remarks: str,
        result_url: str,
        timeout_url: str,
    ) -> PayoutRequestResult:
        try:
            accepted = await self._client.b2c_payment(
                originator_conversation_id=payout_id,
                amount_kes=_kes(amount),
                msisdn=msisdn,
                remarks=remarks,
                result_url=result_url,
                queue_timeout_url=timeout_url,
            )
        except DarajaOutcomeUnknown as exc:
            log.warning("b2c_outcome_unknown", payout_id=payout_id, error=str(exc))
            return PayoutRequestResult(outcome=Outcome.UNKNOWN, message=str(exc))
        except DarajaDuplicateError as exc:
            log.warning("b2c_duplicate", payout_id=payout_id, error=exc.error_message)
            return PayoutRequestResult(
                outcome=Outcome.REJECTED, duplicate=True, error_code=exc.error_code, message=exc.error_message
            )
        except _RETRYABLE as exc:
            return PayoutRequestResult(outcome=Outcome.UNAVAILABLE, error_code=exc.error_code or None, message=str(exc))
        except DarajaRefused as exc:
            return PayoutRequestResult(
                outcome=Outcome.REJECTED, error_code=exc.error_code or None, message=exc.error_message
            )
        except (ValueError, TypeError) as exc:
            return PayoutRequestResult(outcome=Outcome.REJECTED, error_code=INVALID_REQUEST, message=str(exc))
        return PayoutRequestResult(
            outcome=Outcome.DONE, conversation_id=accepted.conversation_id, message=accepted.response_description
        )

    async def transaction_status(self, *, payout_id: PayoutId, result_url: str, timeout_url: str) -> Outcome:
        """Ask for a payout's state by its OriginatorConversationID; DONE means asked (the answer comes to
        ``result_url`` as a Transaction Status result)."""
        try:
            await self._client.transaction_status(
                result_url=result_url, queue_timeout_url=timeout_url, original_conversation_id=payout_id
            )
        except DarajaOutcomeUnknown:
            return Outcome.UNKNOWN
        except _RETRYABLE:
            return Outcome.UNAVAILABLE
        except DarajaRefused as exc:
            log.warning("transaction_status_refused", payout_id=payout_id, error=str(exc))
            return Outcome.REJECTED
        except (ValueError, TypeError):
            return Outcome.REJECTED
        return Outcome.DONE


_: type[ports.Mpesa] = DarajaMpesa


# ------------------------------------------------------------------------------------------ callbacks -> domain


def payment_result_from_stk_callback(callback: StkCallback) -> PaymentResult:
    """An STK callback as a payment result: amount and receipt only where M-Pesa reports them (a success)."""
    return PaymentResult(
        status=payment_status(callback.outcome),
        result_code=callback.result_code,
        description=callback.result_desc,
        receipt=callback.receipt,
        amount=Money.kes(callback.amount_kes) if callback.amount_kes is not None else None,
    )


def payment_result_from_b2c_result(result: B2cResult) -> PaymentResult:
    """A B2C result. A failed one still carries a TransactionID, which is not a receipt: only PAID has one."""
    status = payment_status(result.outcome)
    paid = status is PaymentStatus.PAID
    return PaymentResult(
        status=status,
        result_code=result.result_code,
        description=result.result_desc,
        receipt=(result.receipt or result.transaction_id or None) if paid else None,
        amount=Money.kes(result.amount_kes) if paid and result.amount_kes is not None else None,
    )


def payment_result_from_queue_timeout(notice: B2cQueueTimeout) -> PaymentResult:
    """A queue-timeout notice: the payout may or may not have been made. UNKNOWN, never FAILED: ask Transaction
    Status."""
    return PaymentResult(
        status=PaymentStatus.UNKNOWN,
        result_code=notice.result_code,
        description=notice.result_desc or "queue timeout",
    )


def payment_result_from_transaction_status(result: TransactionStatusResult) -> PaymentResult:
    """A Transaction Status result about a payout. A failed query (non-zero ResultCode) is UNKNOWN."""
    status = payment_status(result.outcome)
    paid = status is PaymentStatus.PAID
    return PaymentResult(
        status=status,
        result_code=result.result_code,
        description=result.transaction_status or result.result_desc,
        receipt=(result.receipt or result.transaction_id or None) if paid else None,
        amount=Money.kes(result.amount_kes) if paid and result.amount_kes is not None else None,
    )


def payment_result_from_payout_result_body(body: Body, *, payout_id: PayoutId) -> PaymentResult:
    """Whatever arrives at a payout's ResultURL: the B2C result itself, or the answer to a Transaction Status query
    about it, when the query was given the same URL. A Transaction Status result names its own request, not the
    payout, in ``OriginatorConversationID`` and lists ``TransactionStatus`` among its parameters; a failed query has
    neither. So: the B2C result only where the id is the payout's; a status answer where it says so; anything else
    is UNKNOWN (never a failure that would trigger a reversal of money that may have moved)."""
    result = load(body).get("Result")
    if not isinstance(result, Mapping):
        raise DarajaPayloadError("a Daraja result is {'Result': {...}}")
    if str(result.get("OriginatorConversationID", "")) == payout_id:
        return payment_result_from_b2c_result(parse_b2c_result(body))
    status = parse_transaction_status_result(body)
    if status.transaction_status is None:
        return PaymentResult(
            status=PaymentStatus.UNKNOWN,
            result_code=status.result_code,
            description=f"not an answer about payout {payout_id}: {status.result_desc}".strip(),
        )
    named = status.parameters.get("OriginatorConversationID")
    if named is not None and named != payout_id:
        return PaymentResult(
            status=PaymentStatus.UNKNOWN,
            result_code=status.result_code,
            description=f"a status answer about {named}, not payout {payout_id}",
        )
    return payment_result_from_transaction_status(status)
