"""Deriv's wire format as the gateway speaks it: exact JSON numbers for money, error envelopes as exceptions.

Amounts cross the wire as JSON numbers with two decimals. They are parsed as ``Decimal`` and written from
``Decimal`` so that no float ever touches money; inside PenPay USD is integer cents.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

Json = dict[str, Any]
_CENT = Decimal("0.01")


class DerivCallError(Exception):
    """A call to Deriv that did not produce a result."""


class NotSentError(DerivCallError):
    """The request never left PenPay (no authorised socket): nothing happened at Deriv; retrying is safe."""


class OutcomeUnknownError(DerivCallError):
    """The request was sent but no answer came (socket dropped, timeout): Deriv may or may not have acted."""


class DerivRejectedError(DerivCallError):
    """Deriv answered ``{"error": {"code", "message"}}``: the call was refused and did nothing. ``call`` is the
    refused call's ``msg_type`` (``authorize``, ``paymentagent_withdraw``, ...): Deriv uses one code for different
    things (``InvalidToken`` for a revoked login token and for a wrong e-mailed verification code)."""

    def __init__(self, code: str, message: str, call: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.call = call


def encode(message: Json) -> str:
    """Serialise a request; ``Decimal`` values become exact JSON numbers (``12.50``)."""
    return _encode(message)


def _encode(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


def decode(raw: str | bytes) -> Json:
    message = json.loads(raw, parse_float=Decimal)
    if not isinstance(message, dict):
        raise ValueError("a Deriv message is a JSON object")
    return message


def cents_to_wire(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(_CENT)


def cents_from_wire(value: object) -> int:
    """A Deriv amount (JSON number, possibly negative) -> integer cents; more than 2 decimals is an error."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"not a Deriv amount: {value!r}")
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"a Deriv amount has at most 2 decimals: {value!r}")
    return int(cents)


def raise_for_error(message: Json) -> Json:
    error = message.get("error")
    if isinstance(error, dict):
        call = message.get("msg_type")
        raise DerivRejectedError(
            str(error.get("code", "UnknownError")), str(error.get("message", "")), call if isinstance(call, str) else ""
        )
    return message
