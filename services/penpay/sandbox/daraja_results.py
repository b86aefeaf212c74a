"""The asynchronous bodies the Daraja simulator POSTs: STK callbacks, B2C results and queue timeouts, and
Transaction Status results, shaped like the samples of reference/daraja.md §3, §5 and §6.

Bodies are built as plain structures holding :class:`JsonNumber` for decimal amounts and rendered with
:func:`to_json`, so ``100.00`` reaches the receiver as Safaricom writes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from penpay.sandbox.daraja_wire import EAT, eat_compact, money

PROCESSED_OK = "The service request is processed successfully."
INITIATOR_INVALID = (2001, "The initiator information is invalid.")
NOT_PERMITTED = (2028, "The request is not permitted according to product assignment.")
NOT_REGISTERED = (
    2040,
    "Credit Party customer type (Unregistered or Registered Customer) can't be supported by the service.",
)
# No sample in the portal pages; the envelope and text follow client code in the field (reference §5).
QUEUE_TIMED_OUT = (1, "The service request has timed out.")
# Undocumented: what Transaction Status answers for an id M-Pesa does not know.
UNKNOWN_TRANSACTION = ("R000001", "The transaction receipt number does not exist.")
B2C_FEE_CENTS = 2240  # "Fee For B2C Payment|KES|22.40" in the §6 sample; illustrative only
SANDBOX_ORG_NAME = "PenPay Sandbox"
QUEUE_TIMEOUT_REFERENCE = "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit"


@dataclass(slots=True)
class StkSession:
    checkout_request_id: str
    merchant_request_id: str
    phone: str
    payer: str
    amount_kes: int
    callback_url: str
    result_code: int
    result_desc: str
    created_at: dt.datetime
    done_at_monotonic: float
    receipt: str | None = None
    completed_at: dt.datetime | None = None

    @property
    def paid(self) -> bool:
        return self.result_code == 0


@dataclass(slots=True)
class Payout:
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    amount_kes: int
    party_a: str
    party_b: str
    result_url: str
    queue_timeout_url: str
    occasion: str | None
    result_code: int
    result_desc: str
    initiated_at: dt.datetime
    balances_cents: dict[str, int] = field(default_factory=dict)

    @property
    def paid(self) -> bool:
        return self.result_code == 0


# ---------------------------------------------------------------------------------- as journal records (``journal``)
_DATETIMES = frozenset({"created_at", "completed_at", "initiated_at"})
_NOT_KEPT = frozenset({"done_at_monotonic"})  # this process's clock: meaningless after a restart


def as_record(value: StkSession | Payout) -> dict[str, Any]:
    """A session's or payout's fields as JSON values (datetimes in ISO 8601)."""
    out: dict[str, Any] = {}
    for f in fields(value):
        if f.name in _NOT_KEPT:
            continue
        item = getattr(value, f.name)
        out[f.name] = item.isoformat() if f.name in _DATETIMES and item is not None else item
    return out


def _values(record: dict[str, Any], kind: type[StkSession] | type[Payout]) -> dict[str, Any]:
    values = {f.name: record[f.name] for f in fields(kind) if f.name not in _NOT_KEPT and f.name in record}
    for name in _DATETIMES & values.keys():
        if values[name] is not None:
            values[name] = dt.datetime.fromisoformat(values[name])
    return values


def session_from(record: dict[str, Any]) -> StkSession:
    return StkSession(**_values(record, StkSession), done_at_monotonic=0.0)


def payout_from(record: dict[str, Any]) -> Payout:
    return Payout(**_values(record, Payout))


def stk_callback(session: StkSession) -> dict[str, object]:
    callback: dict[str, object] = {
        "MerchantRequestID": session.merchant_request_id,
        "CheckoutRequestID": session.checkout_request_id,
        "ResultCode": session.result_code,
        "ResultDesc": session.result_desc,
    }
    if session.paid and session.completed_at is not None:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": money(session.amount_kes * 100)},
                {"Name": "MpesaReceiptNumber", "Value": session.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(eat_compact(session.completed_at))},
                {"Name": "PhoneNumber", "Value": int(session.payer)},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def b2c_result(payout: Payout) -> dict[str, object]:
    result: dict[str, object] = {
        "ResultType": 0,
        "ResultCode": payout.result_code,
        "ResultDesc": payout.result_desc,
        "OriginatorConversationID": payout.originator_conversation_id,
        "ConversationID": payout.conversation_id,
        "TransactionID": payout.transaction_id,
    }
    if payout.paid:
        completed = payout.initiated_at.astimezone(EAT).strftime("%d.%m.%Y %H:%M:%S")
        balances = payout.balances_cents
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": payout.amount_kes},
                {"Key": "TransactionReceipt", "Value": payout.transaction_id},
                {"Key": "ReceiverPartyPublicName", "Value": f"{payout.party_b} - SANDBOX CUSTOMER"},
                {"Key": "TransactionCompletedDateTime", "Value": completed},
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": money(balances["utility"])},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": money(balances["working"])},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": money(balances["charges"])},
            ]
        }
    result["ReferenceData"] = {"ReferenceItem": {"Key": "QueueTimeoutURL", "Value": QUEUE_TIMEOUT_REFERENCE}}
    return {"Result": result}


def queue_timeout(originator_conversation_id: str, conversation_id: str) -> dict[str, object]:
    code, desc = QUEUE_TIMED_OUT
    return {
        "Result": {
            "ResultType": 0,
            "ResultCode": code,
            "ResultDesc": desc,
            "OriginatorConversationID": originator_conversation_id,
            "ConversationID": conversation_id,
            "TransactionID": "",
        }
    }


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """What M-Pesa knows about one transaction, as Transaction Status reports it."""

    transaction_status: str  # "Completed" or "Failed"
    receipt: str
    amount_kes: int
    debit_party: str
    credit_party: str
    originator_conversation_id: str
    conversation_id: str
    reason_type: str
    charges: str
    initiated_at: dt.datetime
    finalised_at: dt.datetime


def status_record_for_stk(session: StkSession) -> StatusRecord:
    if session.receipt is None or session.completed_at is None:
        raise ValueError("only a paid, completed STK session has a status record")
    return StatusRecord(
        transaction_status="Completed",
        receipt=session.receipt,
        amount_kes=session.amount_kes,
        debit_party=f"{session.payer} - SANDBOX CUSTOMER",
        credit_party=SANDBOX_ORG_NAME,
        originator_conversation_id=session.merchant_request_id,
        conversation_id=session.checkout_request_id,
        reason_type="Pay Bill Online",
        charges="",
        initiated_at=session.created_at,
        finalised_at=session.completed_at,
    )


def status_record_for_payout(payout: Payout) -> StatusRecord:
    return StatusRecord(
        transaction_status="Completed" if payout.paid else "Failed",
        receipt=payout.transaction_id,
        amount_kes=payout.amount_kes,
        debit_party=f"{payout.party_a} - {SANDBOX_ORG_NAME}",
        credit_party=f"{payout.party_b} - SANDBOX CUSTOMER",
        originator_conversation_id=payout.originator_conversation_id,
        conversation_id=payout.conversation_id,
        reason_type="Business Payment to Individual via API",
        charges=f"Fee For B2C Payment|KES|{money(B2C_FEE_CENTS)}",
        initiated_at=payout.initiated_at,
        finalised_at=payout.initiated_at,
    )


def transaction_status_result(
    *,
    originator_conversation_id: str,
    conversation_id: str,
    occasion: str | None,
    record: StatusRecord | None,
    refused: tuple[int | str, str] | None = None,
) -> dict[str, object]:
    """The Result of one Transaction Status query: the record's state, or why the query itself failed.

    The ResultCode is the query's: 0 whenever the transaction was found, whatever became of it; the transaction's
    own state is the ``TransactionStatus`` parameter.
    """
    code: int | str
    if refused is not None:
        code, desc = refused
    elif record is None:
        code, desc = UNKNOWN_TRANSACTION
    else:
        code, desc = 0, PROCESSED_OK
    result: dict[str, object] = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc,
        "OriginatorConversationID": originator_conversation_id,
        "ConversationID": conversation_id,
        "TransactionID": record.receipt if record is not None and refused is None else "",
    }
    if refused is None and record is not None:
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "DebitPartyName", "Value": record.debit_party},
                {"Key": "CreditPartyName", "Value": record.credit_party},
                {"Key": "OriginatorConversationID", "Value": record.originator_conversation_id},
                {"Key": "InitiatedTime", "Value": eat_compact(record.initiated_at)},
                {"Key": "DebitAccountType", "Value": "Utility Account"},
                {"Key": "DebitPartyCharges", "Value": record.charges},
                {"Key": "TransactionReason", "Value": ""},
                {"Key": "ReasonType", "Value": record.reason_type},
                {"Key": "TransactionStatus", "Value": record.transaction_status},
                {"Key": "FinalisedTime", "Value": eat_compact(record.finalised_at)},
                {"Key": "Amount", "Value": str(record.amount_kes)},
                {"Key": "ConversationID", "Value": record.conversation_id},
                {"Key": "ReceiptNo", "Value": record.receipt},
            ]
        }
    result["ReferenceData"] = {"ReferenceItem": {"Key": "Occasion", "Value": occasion or ""}}
    return {"Result": result}
