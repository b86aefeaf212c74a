"""FX: a locked USD/KES quote and conversion with one written rounding rule.

The rounding rule (tested by property tests):

1. A quote carries the mid rate ``mid`` (KES per 1 USD) and a spread in basis points.
2. The *applied* rate is ``mid * (1 + spread)`` when the customer buys USD (a deposit) and ``mid * (1 - spread)``
   when the customer sells USD (a withdrawal), rounded to 6 decimal places against the customer (up for buying,
   down for selling).
3. The converted amount is the exact value at the applied rate, rounded **down** to the target's minor unit
   (whole shillings, or cents).

So the customer never receives more than the exact value of what they gave at the applied rate, and at most one
minor unit less: conversion never creates money, and PenPay's rounding gain is below one minor unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from fractions import Fraction

from penpay_domain.errors import CurrencyMismatch, InvalidInput, QuoteExpired
from penpay_domain.ids import QuoteId
from penpay_domain.money import Currency, Money

RATE_PLACES = Decimal("0.000001")
BPS = 10_000


class Side(StrEnum):
    """Which way the customer trades USD: a deposit buys USD with KES, a withdrawal sells USD for KES."""

    CUSTOMER_BUYS_USD = "buy_usd"
    CUSTOMER_SELLS_USD = "sell_usd"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockedRate:
    """A quote locked at initiation and stored on the transaction. ``mid`` is KES per 1 USD."""

    quote_id: QuoteId
    mid: Decimal
    spread_bps: int
    issued_at: datetime
    expires_at: datetime
    pair: str = "USD/KES"

    def __post_init__(self) -> None:
        if not isinstance(self.mid, Decimal) or not self.mid.is_finite() or self.mid <= 0:
            raise InvalidInput("an FX rate is a positive Decimal")
        if type(self.spread_bps) is not int or not 0 <= self.spread_bps < BPS:
            raise InvalidInput("the FX spread is an integer number of basis points in [0, 10000)")
        if self.expires_at <= self.issued_at:
            raise InvalidInput("a quote must expire after it is issued")

    def applied_rate(self, side: Side) -> Decimal:
        """KES per 1 USD that the customer gets, rounded to 6 places against the customer."""
        spread = Decimal(self.spread_bps) / BPS
        if side is Side.CUSTOMER_BUYS_USD:
            return (self.mid * (1 + spread)).quantize(RATE_PLACES, rounding=ROUND_CEILING)
        return (self.mid * (1 - spread)).quantize(RATE_PLACES, rounding=ROUND_FLOOR)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def ensure_valid(self, now: datetime) -> None:
        if self.is_expired(now):
            raise QuoteExpired(f"FX quote {self.quote_id} expired at {self.expires_at.isoformat()}")

    def kes_to_usd(self, amount: Money) -> Money:
        """A deposit: KES in, USD cents out, floored."""
        if amount.currency is not Currency.KES:
            raise CurrencyMismatch("kes_to_usd converts KES")
        return convert(amount, Currency.USD, self.applied_rate(Side.CUSTOMER_BUYS_USD))

    def usd_to_kes(self, amount: Money) -> Money:
        """A withdrawal: USD cents in, whole KES out, floored."""
        if amount.currency is not Currency.USD:
            raise CurrencyMismatch("usd_to_kes converts USD")
        return convert(amount, Currency.KES, self.applied_rate(Side.CUSTOMER_SELLS_USD))

    def kes_needed_for_usd(self, amount: Money) -> Money:
        """The fewest whole KES a deposit needs so that it converts to at least ``amount`` USD (for limits)."""
        if amount.currency is not Currency.USD:
            raise CurrencyMismatch("kes_needed_for_usd takes USD")
        rate = Fraction(self.applied_rate(Side.CUSTOMER_BUYS_USD))
        return Money(math.ceil(Fraction(amount.minor, 100) * rate), Currency.KES)


def convert(amount: Money, target: Currency, kes_per_usd: Decimal) -> Money:
    """Convert at ``kes_per_usd`` exactly (rational arithmetic), then floor to the target's minor unit."""
    if amount.currency is target:
        raise CurrencyMismatch(f"{amount.currency.value} is already {target.value}")
    rate = Fraction(kes_per_usd)
    if rate <= 0:
        raise InvalidInput("an FX rate is positive")
    major = Fraction(amount.minor, 10**amount.currency.exponent)
    value = major / rate if target is Currency.USD else major * rate
    return Money(math.floor(value * 10**target.exponent), target)
