"""Limit policies: per-transaction bounds (M-Pesa's own) and a per-user daily limit, all in KES.

The daily window is the calendar day in Nairobi (EAT, UTC+3: Kenya has no daylight saving), which is what a
customer means by "today". Withdrawals count their KES equivalent at the locked rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from penpay_domain.errors import AmountOutOfRange, InvalidInput, LimitExceeded
from penpay_domain.money import Currency, Money

EAT_OFFSET = timedelta(hours=3)


def day_window(now: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the Nairobi calendar day containing ``now``, as UTC datetimes."""
    if now.tzinfo is None:
        raise InvalidInput("times must be timezone-aware")
    local = now.astimezone(UTC) + EAT_OFFSET
    start_local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    start = start_local - EAT_OFFSET
    return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitPolicy:
    min_kes: int
    max_kes: int
    daily_kes: int

    def __post_init__(self) -> None:
        if not 0 < self.min_kes <= self.max_kes:
            raise InvalidInput("limits need 0 < min <= max")
        if self.daily_kes < self.max_kes:
            raise InvalidInput("the daily limit cannot be below the per-transaction maximum")

    def check_amount(self, amount: Money) -> None:
        if amount.currency is not Currency.KES:
            raise InvalidInput("limits are checked on KES amounts")
        if not self.min_kes <= amount.minor <= self.max_kes:
            raise AmountOutOfRange(
                f"amount {amount} is outside the allowed range {self.min_kes}..{self.max_kes} KES",
                minimum=self.min_kes,
                maximum=self.max_kes,
            )

    def check_daily(self, *, used_today: Money, amount: Money) -> None:
        """``used_today`` is every non-failed transaction of the user today, in KES."""
        total = used_today + amount
        if total.minor > self.daily_kes:
            remaining = max(0, self.daily_kes - used_today.minor)
            raise LimitExceeded(
                f"this would take you to {total} today; the daily limit is {self.daily_kes} KES "
                f"({remaining} KES left today)",
                daily_limit=self.daily_kes,
                remaining=remaining,
            )
