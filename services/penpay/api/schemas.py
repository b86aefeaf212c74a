"""The HTTP edge's shapes: strict request models (unknown fields are refused) and the transaction's JSON.

The transaction JSON is rendered to bytes once, by ``render_transaction``, so the first response and an idempotent
replay are the same bytes. Amounts: ``amount_kes`` and ``fee`` are integers (whole shillings), ``amount_usd`` is a
decimal string with two places (``"12.50"``), ``fx_rate`` a decimal string (KES per USD); times are ISO-8601 UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from penpay_domain.errors import DomainError
from penpay_domain.ids import DerivLoginId, parse_deriv_loginid
from penpay_domain.money import Currency, Money
from penpay_domain.msisdn import Msisdn, parse_msisdn
from penpay_domain.transaction import Transaction

DOMAIN_ERROR = "domain_error"  # the key of a field error's ``ctx`` that holds the domain's own error
T = TypeVar("T")


def checked_by(parse: Callable[[str], T]) -> AfterValidator:
    """A field checked by the domain's own parser, so that a body's every bad field is named in one answer: the
    domain's error becomes a field error whose ``type`` is the domain's code (``api.problems`` answers a body with
    only that one error exactly as the domain error itself)."""

    def check(value: str) -> T:
        try:
            return parse(value)
        except DomainError as exc:
            raise PydanticCustomError(exc.code, "{reason}", {"reason": exc.message, DOMAIN_ERROR: exc}) from None

    return AfterValidator(check)


USD_AMOUNT_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*$"


def _usd_text(text: str) -> str:
    Money.parse(text, Currency.USD)
    return text


MsisdnText = Annotated[
    Msisdn,
    Field(max_length=32, description="the phone, e.g. 0712345678 or 254712345678; returned normalised"),
    checked_by(parse_msisdn),
]
LoginIdText = Annotated[
    DerivLoginId, Field(max_length=32, description="a Deriv login id, e.g. CR1234567"), checked_by(parse_deriv_loginid)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DepositRequest(Strict):
    amount_kes: StrictInt = Field(description="whole Kenyan shillings")
    msisdn: MsisdnText
    deriv_loginid: LoginIdText


class WithdrawRequest(Strict):
    amount_usd: Annotated[
        StrictStr,
        # the format is checked by the domain's own parser (a specific invalid_amount and reason); the pattern is
        # only documented, for clients reading the OpenAPI schema
        Field(max_length=32, json_schema_extra={"pattern": USD_AMOUNT_PATTERN}, description='e.g. "12.50"'),
        checked_by(_usd_text),
    ]
    msisdn: MsisdnText
    deriv_loginid: LoginIdText
    verification_code: StrictStr = Field(
        min_length=1, max_length=128, pattern=r"^[!-~]+$", description="the code Deriv e-mailed to the user"
    )


class WithdrawalCodeRequest(Strict):
    deriv_loginid: LoginIdText


class LinkRequest(Strict):
    token: StrictStr = Field(min_length=1, max_length=4096, description="the user's Deriv API/OAuth token")


class ResolveRequest(Strict):
    status: StrictStr = Field(description="the outcome found at the provider, e.g. COMPLETED")
    note: StrictStr = Field(min_length=1, max_length=500)


class RetryRequest(Strict):
    status: StrictStr = Field(description="the non-terminal status to resume at, e.g. CREDITING")


class TransactionOut(BaseModel):
    """Documentation of ``render_transaction``'s output (the same fields, in this order)."""

    id: str
    kind: str
    status: str
    amount_kes: int
    amount_usd: str
    fx_rate: str
    fee: int
    msisdn: str
    deriv_loginid: str
    mpesa_receipt: str | None
    deriv_transaction_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class TransactionPage(BaseModel):
    items: list[TransactionOut]
    next_cursor: str | None


class TransactionList(BaseModel):
    items: list[TransactionOut]


class LinkedOut(BaseModel):
    deriv_loginid: str
    currency: str


class CodeRequestedOut(BaseModel):
    status: str
    deriv_loginid: str


class Acknowledgement(BaseModel):
    ResultCode: int
    ResultDesc: str


TRANSACTION_FIELDS = tuple(TransactionOut.model_fields)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def transaction_dict(txn: Transaction) -> dict[str, Any]:
    return {
        "id": txn.id,
        "kind": txn.kind.value,
        "status": txn.status.value,
        "amount_kes": txn.amount_kes.minor,
        "amount_usd": txn.amount_usd.to_str(),
        "fx_rate": str(txn.fx_rate),
        "fee": txn.fee.minor,
        "msisdn": txn.parties.msisdn,
        "deriv_loginid": txn.parties.deriv_loginid,
        "mpesa_receipt": txn.mpesa_receipt,
        "deriv_transaction_id": txn.deriv_transaction_id,
        "failure_reason": txn.failure_reason,
        "created_at": iso(txn.created_at),
        "updated_at": iso(txn.updated_at),
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def render_transaction(txn: Transaction) -> bytes:
    return dumps(transaction_dict(txn))


def render_page(items: Sequence[Transaction], next_cursor: str | None) -> bytes:
    return dumps({"items": [transaction_dict(t) for t in items], "next_cursor": next_cursor})
