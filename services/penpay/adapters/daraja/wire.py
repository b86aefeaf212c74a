"""Typed views of Daraja's responses and asynchronous callbacks, tolerant of the quirks in reference/daraja.md.

Quirks handled here: ``ResultCode`` as a number or a string; ``expires_in`` as a number or a string; callback
``Item``s looked up by ``Name`` (order and presence vary, ``Balance`` has no ``Value``); ``ResultParameter`` and
``ReferenceItem`` as one object or a list; the payer's phone as a number, a string or a masked string; ``Amount``
as a float-looking JSON number (``100.00``), converted to whole shillings exactly through ``Decimal`` (a fractional
amount is refused, never rounded).

Pass callback bodies as the raw ``bytes`` received: they are decoded with ``parse_float=Decimal`` so no amount ever
passes through a float. Already-decoded mappings are accepted too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from penpay.adapters.daraja.codes import Outcome, b2c_outcome, normalise_code, stk_outcome


class DarajaPayloadError(ValueError):
    """A Daraja body that does not have the documented shape."""


Body = bytes | str | Mapping[str, Any]


def load(body: Body) -> Mapping[str, Any]:
    if isinstance(body, bytes | str):
        try:
            decoded = json.loads(body, parse_float=Decimal)
        except ValueError as exc:
            raise DarajaPayloadError(f"not JSON: {exc}") from None
    else:
        decoded = body
    if not isinstance(decoded, Mapping):
        raise DarajaPayloadError("a Daraja body is a JSON object")
    return decoded


def whole_shillings(value: object) -> int:
    """An amount as Daraja writes it (``10``, ``"300"``, ``100.00``) as exact whole shillings."""
    if isinstance(value, bool) or value is None:
        raise DarajaPayloadError(f"not an amount: {value!r}")
    if isinstance(value, int):
        return value
    try:
        # repr() of a float is its shortest round-trip text, so 100.0 -> Decimal("100.0") without binary noise.
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise DarajaPayloadError(f"not an amount: {value!r}") from None
    if not amount.is_finite() or amount != amount.to_integral_value():
        raise DarajaPayloadError(f"not a whole number of shillings: {value!r}")
    return int(amount)


def expires_in_seconds(value: object) -> int:
    """OAuth's ``expires_in``: the portal shows a number, the gateway sends a string."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal | float):
        raise DarajaPayloadError(f"expires_in: {value!r}")
    return whole_shillings(value)


def _text(mapping: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = mapping.get(key)
    if value is None:
        if required:
            raise DarajaPayloadError(f"missing {key}")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise DarajaPayloadError(f"{key} is not text: {value!r}")
    return str(value)


def _one_or_many(value: object) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, Mapping) for item in items):
        raise DarajaPayloadError(f"expected objects: {value!r}")
    return list(items)


def _pairs(items: list[Mapping[str, Any]], key: str) -> dict[str, Any]:
    return {str(item[key]): item.get("Value") for item in items if key in item}


def _optional_text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)


# ------------------------------------------------------------------------------------------ synchronous answers


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in_s: int


@dataclass(frozen=True, slots=True)
class StkPushResult:
    """STK Push was accepted: a prompt is on its way. Store ``checkout_request_id`` before anything else."""

    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    response_description: str
    customer_message: str


@dataclass(frozen=True, slots=True)
class StkQueryResult:
    """What STK Push Query says; it has no receipt, amount or date (reference §4)."""

    checkout_request_id: str
    outcome: Outcome
    result_code: str | None
    result_desc: str
    merchant_request_id: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """B2C or Transaction Status accepted for processing; the result comes later to the ResultURL."""

    conversation_id: str
    originator_conversation_id: str
    response_code: str
    response_description: str


def parse_access_token(body: Body) -> AccessToken:
    data = load(body)
    return AccessToken(token=_text(data, "access_token"), expires_in_s=expires_in_seconds(data.get("expires_in")))


def parse_stk_push(body: Body) -> StkPushResult:
    data = load(body)
    return StkPushResult(
        merchant_request_id=_text(data, "MerchantRequestID"),
        checkout_request_id=_text(data, "CheckoutRequestID"),
        response_code=_text(data, "ResponseCode"),
        response_description=_text(data, "ResponseDescription", required=False),
        customer_message=_text(data, "CustomerMessage", required=False),
    )


def parse_stk_query(body: Body) -> StkQueryResult:
    data = load(body)
    code = normalise_code(data.get("ResultCode"))
    return StkQueryResult(
        checkout_request_id=_text(data, "CheckoutRequestID"),
        merchant_request_id=_text(data, "MerchantRequestID", required=False),
        outcome=stk_outcome(code),
        result_code=code,
        result_desc=_text(data, "ResultDesc", required=False),
    )


def parse_accepted(body: Body) -> Accepted:
    data = load(body)
    return Accepted(
        conversation_id=_text(data, "ConversationID"),
        originator_conversation_id=_text(data, "OriginatorConversationID"),
        response_code=_text(data, "ResponseCode"),
        response_description=_text(data, "ResponseDescription", required=False),
    )


# ------------------------------------------------------------------------------------------ STK callback


@dataclass(frozen=True, slots=True)
class StkCallback:
    """The STK result. Only ``outcome is PAID`` means money moved; the phone is recorded, never trusted."""

    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    outcome: Outcome
    amount_kes: int | None = None
    receipt: str | None = None
    transaction_date: str | None = None  # YYYYMMDDHHmmss, EAT
    phone: str | None = None  # may be masked (2026) or hashed: never key on it


def parse_stk_callback(body: Body) -> StkCallback:
    data = load(body)
    inner = data.get("Body")
    callback = inner.get("stkCallback") if isinstance(inner, Mapping) else None
    if not isinstance(callback, Mapping):
        raise DarajaPayloadError("an STK callback is {'Body': {'stkCallback': {...}}}")
    code = normalise_code(callback.get("ResultCode"))
    metadata = callback.get("CallbackMetadata")
    items = _pairs(_one_or_many(metadata.get("Item")), "Name") if isinstance(metadata, Mapping) else {}
    amount = items.get("Amount")
    return StkCallback(
        merchant_request_id=_text(callback, "MerchantRequestID"),
        checkout_request_id=_text(callback, "CheckoutRequestID"),
        result_code=code,
        result_desc=_text(callback, "ResultDesc", required=False),
        outcome=stk_outcome(code),
        amount_kes=whole_shillings(amount) if amount is not None else None,
        receipt=_optional_text(items.get("MpesaReceiptNumber")),
        transaction_date=_optional_text(items.get("TransactionDate")),
        phone=_optional_text(items.get("PhoneNumber")),
    )


# ------------------------------------------------------------------------------------------ B2C and status results


@dataclass(frozen=True, slots=True)
class B2cResult:
    """A B2C result from the ResultURL. A failed result still carries a TransactionID: only PAID counts."""

    result_type: int
    result_code: str
    result_desc: str
    outcome: Outcome
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    amount_kes: int | None = None
    receipt: str | None = None
    receiver_public_name: str | None = None
    completed_at: str | None = None  # dd.MM.yyyy HH:mm:ss, EAT
    recipient_registered: bool | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class B2cQueueTimeout:
    """A notice on the QueueTimeOutURL: the outcome is UNKNOWN, whatever its code says; ask Transaction Status."""

    result_code: str
    result_desc: str
    originator_conversation_id: str
    conversation_id: str
    outcome: Outcome = Outcome.UNKNOWN


@dataclass(frozen=True, slots=True)
class TransactionStatusResult:
    """A Transaction Status result. A non-zero ResultCode means the *query* failed: the outcome stays UNKNOWN."""

    result_code: str
    result_desc: str
    outcome: Outcome
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    transaction_status: str | None = None
    receipt: str | None = None
    amount_kes: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)


_FAILED_STATUSES = frozenset({"failed", "declined", "cancelled", "canceled", "expired", "reversed"})


def _result(body: Body) -> Mapping[str, Any]:
    data = load(body)
    result = data.get("Result")
    if not isinstance(result, Mapping):
        raise DarajaPayloadError("a Daraja result is {'Result': {...}}")
    return result


def _parameters(result: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    params = result.get("ResultParameters")
    raw = _pairs(_one_or_many(params.get("ResultParameter")), "Key") if isinstance(params, Mapping) else {}
    reference = result.get("ReferenceData")
    ref = _pairs(_one_or_many(reference.get("ReferenceItem")), "Key") if isinstance(reference, Mapping) else {}
    return raw, {k: str(v) for k, v in ref.items() if v is not None}


def _as_text(raw: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in raw.items() if v is not None}


def parse_b2c_result(body: Body) -> B2cResult:
    result = _result(body)
    code = normalise_code(result.get("ResultCode"))
    raw, reference = _parameters(result)
    amount = raw.get("TransactionAmount")
    registered = raw.get("B2CRecipientIsRegisteredCustomer")
    result_type = result.get("ResultType", 0)
    return B2cResult(
        result_type=int(result_type) if isinstance(result_type, int | str) and str(result_type).isdigit() else 0,
        result_code=code,
        result_desc=_text(result, "ResultDesc", required=False),
        outcome=b2c_outcome(code),
        originator_conversation_id=_text(result, "OriginatorConversationID", required=False),
        conversation_id=_text(result, "ConversationID", required=False),
        transaction_id=_text(result, "TransactionID", required=False),
        amount_kes=whole_shillings(amount) if amount is not None else None,
        receipt=_optional_text(raw.get("TransactionReceipt")),
        receiver_public_name=_optional_text(raw.get("ReceiverPartyPublicName")),
        completed_at=_optional_text(raw.get("TransactionCompletedDateTime")),
        recipient_registered=None if registered is None else str(registered).upper() == "Y",
        parameters=_as_text(raw),
        reference=reference,
    )


def parse_b2c_queue_timeout(body: Body) -> B2cQueueTimeout:
    result = _result(body)
    return B2cQueueTimeout(
        result_code=normalise_code(result.get("ResultCode", "")),
        result_desc=_text(result, "ResultDesc", required=False),
        originator_conversation_id=_text(result, "OriginatorConversationID", required=False),
        conversation_id=_text(result, "ConversationID", required=False),
    )


def parse_transaction_status_result(body: Body) -> TransactionStatusResult:
    result = _result(body)
    code = normalise_code(result.get("ResultCode"))
    raw, _ = _parameters(result)
    status = _optional_text(raw.get("TransactionStatus"))
    if code != "0":
        outcome = Outcome.UNKNOWN
    elif status is not None and status.lower() == "completed":
        outcome = Outcome.PAID
    elif status is not None and status.lower() in _FAILED_STATUSES:
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.PENDING
    amount = raw.get("Amount")
    return TransactionStatusResult(
        result_code=code,
        result_desc=_text(result, "ResultDesc", required=False),
        outcome=outcome,
        originator_conversation_id=_text(result, "OriginatorConversationID", required=False),
        conversation_id=_text(result, "ConversationID", required=False),
        transaction_id=_text(result, "TransactionID", required=False),
        transaction_status=status,
        receipt=_optional_text(raw.get("ReceiptNo")),
        amount_kes=whole_shillings(amount) if amount is not None else None,
        parameters=_as_text(raw),
    )
