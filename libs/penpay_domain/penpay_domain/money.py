"""Money in integer minor units with a currency. Never binary floating point.

KES is counted in whole shillings (M-Pesa's edge moves whole shillings only), USD in cents (Deriv's edge has two
decimals). Arithmetic across currencies is an error, and so is building Money from anything but an int.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Self

from penpay_domain.errors import CurrencyMismatch, InvalidAmount


class Currency(StrEnum):
    KES = "KES"
    USD = "USD"

    @property
    def exponent(self) -> int:
        """Decimal places of one minor unit: KES whole shillings (0), USD cents (2)."""
        return _EXPONENTS[self]


_EXPONENTS = {Currency.KES: 0, Currency.USD: 2}
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True, order=False)
class Money:
    minor: int
    currency: Currency

    def __post_init__(self) -> None:
        if type(self.minor) is not int:  # only a true int: bool, Decimal, str and binary fractions are refused
            raise InvalidAmount(f"money must be an integer number of minor units, got {type(self.minor).__name__}")
        if not isinstance(self.currency, Currency):
            raise InvalidAmount(f"unknown currency {self.currency!r}")

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def zero(cls, currency: Currency) -> Self:
        return cls(0, currency)

    @classmethod
    def kes(cls, shillings: int) -> Money:
        return Money(shillings, Currency.KES)

    @classmethod
    def usd_cents(cls, cents: int) -> Money:
        return Money(cents, Currency.USD)

    @classmethod
    def parse(cls, text: str, currency: Currency) -> Money:
        """Parse a decimal string such as ``"12.50"`` exactly; more decimals than the currency has is an error."""
        if not isinstance(text, str):
            raise InvalidAmount('amounts are given as decimal strings, e.g. "12.50"')
        stripped = text.strip()
        # Plain ASCII digits only: Decimal() would also take "1e2", "1_000", "NaN" and non-ASCII digits.
        if not _DECIMAL_TEXT.fullmatch(stripped):
            raise InvalidAmount(f"{text!r} is not a decimal amount")
        # Exact rational scaling: Decimal.scaleb rounds to 28 significant digits and would hide extra decimals.
        scaled = Fraction(stripped) * 10**currency.exponent
        if scaled.denominator != 1:
            raise InvalidAmount(
                f"{text!r} has more than {currency.exponent} decimal places for {currency.value}",
                currency=currency.value,
            )
        return cls(scaled.numerator, currency)

    # --- arithmetic ---------------------------------------------------------------------------------------------
    def _same(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency is not self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency.value} with {other.currency.value}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.minor + self._same(other).minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.minor - self._same(other).minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.minor < self._same(other).minor

    def __le__(self, other: Money) -> bool:
        return self.minor <= self._same(other).minor

    def __gt__(self, other: Money) -> bool:
        return self.minor > self._same(other).minor

    def __ge__(self, other: Money) -> bool:
        return self.minor >= self._same(other).minor

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    @property
    def is_zero(self) -> bool:
        return self.minor == 0

    def to_decimal(self) -> Decimal:
        return Decimal(self.to_str())  # exact at any size (scaleb would round to the context's 28 digits)

    def to_str(self) -> str:
        """The amount as a plain decimal string with exactly the currency's decimals: ``"12.50"``, ``"1000"``."""
        exp = self.currency.exponent
        sign = "-" if self.minor < 0 else ""
        digits = str(abs(self.minor)).rjust(exp + 1, "0")
        return f"{sign}{digits[:-exp]}.{digits[-exp:]}" if exp else f"{sign}{digits}"

    def __str__(self) -> str:
        return f"{self.to_str()} {self.currency.value}"


def require_positive(amount: Money, what: str = "amount") -> Money:
    if not amount.is_positive:
        raise InvalidAmount(f"{what} must be positive, got {amount}")
    return amount
