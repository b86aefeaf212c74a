"""Fee policy: basis points of the KES amount plus a fixed part, clamped to [minimum, maximum], rounded **up** to
a whole shilling (the only rounding in PenPay's favour that a fee makes, and never more than one shilling)."""

from __future__ import annotations

from dataclasses import dataclass

from penpay_domain.errors import InvalidInput
from penpay_domain.money import Currency, Money


@dataclass(frozen=True, slots=True, kw_only=True)
class FeePolicy:
    bps: int = 0
    fixed_kes: int = 0
    minimum_kes: int = 0
    maximum_kes: int | None = None

    def __post_init__(self) -> None:
        for name in ("bps", "fixed_kes", "minimum_kes"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise InvalidInput(f"fee {name} must be a non-negative integer")
        if self.maximum_kes is not None and self.maximum_kes < self.minimum_kes:
            raise InvalidInput("fee maximum is below the minimum")

    def fee_for(self, amount: Money) -> Money:
        if amount.currency is not Currency.KES:
            raise InvalidInput("fees are computed on the KES amount")
        raw = -(-amount.minor * self.bps // 10_000)  # integer ceiling: true division would leave the integers
        fee = max(self.minimum_kes, raw + self.fixed_kes)
        if self.maximum_kes is not None:
            fee = min(fee, self.maximum_kes)
        return Money(min(fee, amount.minor), Currency.KES)


NO_FEE = FeePolicy()
