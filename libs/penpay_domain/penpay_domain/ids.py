"""Identifiers: time-sortable transaction ids, payout ids, quote ids, idempotency keys, Deriv login ids."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NewType

from penpay_domain.errors import InvalidInput, InvalidLoginId

TransactionId = NewType("TransactionId", str)
PayoutId = NewType("PayoutId", str)
QuoteId = NewType("QuoteId", str)
UserId = NewType("UserId", str)
DerivLoginId = NewType("DerivLoginId", str)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _ulid(now: datetime, randomness: bytes) -> str:
    # integer arithmetic on the timedelta: ``timestamp()`` is an inexact binary fraction, and ``int(ts * 1000)`` gave
    # two ids made a millisecond apart the same time prefix (hypothesis found one)
    millis = (now - _EPOCH) // _MILLISECOND
    if not 0 <= millis < 2**48:
        raise InvalidInput("time out of range for an id")
    return _b32(millis, 10) + _b32(int.from_bytes(randomness, "big"), 16)


def new_transaction_id(now: datetime, randomness: bytes | None = None) -> TransactionId:
    """A ULID: 26 Crockford base-32 characters, ordered by creation time (ms), then 80 random bits."""
    rnd = randomness if randomness is not None else secrets.token_bytes(10)
    if len(rnd) != 10:
        raise InvalidInput("an id needs exactly 10 random bytes")
    return TransactionId(_ulid(now, rnd))


_HEX_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def transaction_id_hex(txn_id: TransactionId) -> str:
    """The id's 128 bits as 32 lowercase hex digits: the form PenPay puts in the callback URLs it gives Daraja, whose
    filter refuses URLs containing words such as "cmd" or "exe" that base-32 can spell and hex cannot."""
    value = 0
    for ch in txn_id:
        value = value * 32 + _CROCKFORD.index(ch)
    if value >= 2**128:
        raise InvalidInput(f"{txn_id!r} is not a transaction id")
    return f"{value:032x}"


def parse_transaction_id_hex(text: str) -> TransactionId:
    """The inverse of :func:`transaction_id_hex`."""
    if not _HEX_ID_RE.match(text):
        raise InvalidInput(f"{text!r} is not a transaction id (32 lowercase hex digits)")
    return TransactionId(_b32(int(text, 16), 26))


def new_quote_id(now: datetime) -> QuoteId:
    return QuoteId("Q" + _ulid(now, secrets.token_bytes(10)))


def new_payout_id(now: datetime) -> PayoutId:
    """A B2C OriginatorConversationID: 20 alphanumerics (Daraja: keep it <= 20), time-prefixed, 50 random bits."""
    return PayoutId(_ulid(now, secrets.token_bytes(10))[:20])


def parse_transaction_id(text: str) -> TransactionId:
    candidate = text.strip().upper()
    if not _ULID_RE.match(candidate):
        raise InvalidInput(f"{text!r} is not a transaction id (26 base-32 characters)")
    return TransactionId(candidate)


_LOGINID_RE = re.compile(r"^(CR|VRTC|MF|MFW|MLT|MX|VRW|CRW)(\d{3,12})$")


def parse_deriv_loginid(text: str) -> DerivLoginId:
    """Deriv login ids: a landing-company prefix (CR, VRTC, MF, MLT, MX, ...) followed by digits."""
    if not isinstance(text, str):
        raise InvalidLoginId("a Deriv login id is a string such as CR1234567")
    candidate = text.strip().upper()
    if not _LOGINID_RE.match(candidate):
        raise InvalidLoginId(
            f"{text!r} is not a Deriv login id: expected a prefix such as CR or VRTC followed by digits, e.g. CR1234567"
        )
    return DerivLoginId(candidate)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client-chosen key, scoped to one user: the same key from two users are two different keys."""

    user_id: UserId
    key: str

    MAX_LENGTH = 255

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > self.MAX_LENGTH:
            raise InvalidInput(f"an idempotency key has 1 to {self.MAX_LENGTH} characters")
        if not all(33 <= ord(ch) <= 126 for ch in self.key):
            raise InvalidInput("an idempotency key is printable ASCII without spaces")
