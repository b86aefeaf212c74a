"""Limit policies: per-transaction bounds, a daily limit, and the Nairobi calendar day (UTC+3) it counts over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.errors import AmountOutOfRange, CurrencyMismatch, InvalidAmount, InvalidInput, LimitExceeded
from penpay_domain.limits import LimitPolicy, day_window
from penpay_domain.money import Money
from tests.unit.domain_builders import PROPERTY

# hypothesis takes naive bounds and makes the drawn values aware through ``timezones``
EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001
POLICY = LimitPolicy(min_kes=10, max_kes=150_000, daily_kes=300_000)


class TestAmountBounds:
    @pytest.mark.parametrize("amount", [10, 1_000, 150_000])
    def test_amounts_within_the_bounds_pass(self, amount: int) -> None:
        POLICY.check_amount(Money.kes(amount))

    @pytest.mark.parametrize("amount", [0, 9, 150_001])
    def test_amounts_outside_the_bounds_are_refused_with_the_range(self, amount: int) -> None:
        with pytest.raises(AmountOutOfRange, match=r"outside the allowed range 10\.\.150000 KES") as caught:
            POLICY.check_amount(Money.kes(amount))
        assert caught.value.details == {"minimum": 10, "maximum": 150_000}
        assert caught.value.code == "amount_out_of_range"
        assert isinstance(caught.value, InvalidAmount)

    def test_bounds_are_checked_on_kes(self) -> None:
        with pytest.raises(InvalidInput, match="KES"):
            POLICY.check_amount(Money.usd_cents(1_000))


class TestDailyLimit:
    def test_reaching_the_limit_exactly_is_allowed(self) -> None:
        POLICY.check_daily(used_today=Money.kes(250_000), amount=Money.kes(50_000))

    def test_going_over_the_limit_is_refused_with_what_is_left(self) -> None:
        with pytest.raises(LimitExceeded) as caught:
            POLICY.check_daily(used_today=Money.kes(250_000), amount=Money.kes(50_001))
        assert caught.value.message == (
            "this would take you to 300001 KES today; the daily limit is 300000 KES (50000 KES left today)"
        )
        assert caught.value.details == {"daily_limit": 300_000, "remaining": 50_000}

    def test_nothing_is_left_once_the_limit_is_used_up(self) -> None:
        with pytest.raises(LimitExceeded) as caught:
            POLICY.check_daily(used_today=Money.kes(310_000), amount=Money.kes(10))
        assert caught.value.details["remaining"] == 0

    def test_usage_and_amount_must_be_in_the_same_currency(self) -> None:
        with pytest.raises(CurrencyMismatch):
            POLICY.check_daily(used_today=Money.usd_cents(0), amount=Money.kes(10))


class TestPolicyValidation:
    @pytest.mark.parametrize(
        ("min_kes", "max_kes", "daily_kes"),
        [(0, 100, 100), (-1, 100, 100), (101, 100, 1_000), (10, 100, 99)],
    )
    def test_inconsistent_limits_are_refused(self, min_kes: int, max_kes: int, daily_kes: int) -> None:
        with pytest.raises(InvalidInput):
            LimitPolicy(min_kes=min_kes, max_kes=max_kes, daily_kes=daily_kes)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class TestNairobiDay:
    def test_the_last_second_before_2100_utc_belongs_to_the_nairobi_day_that_began_the_evening_before(self) -> None:
        # 2024-05-01 20:59:59Z is 23:59:59 on 1 May in Nairobi
        assert day_window(utc(2024, 5, 1, 20, 59, 59)) == (utc(2024, 4, 30, 21), utc(2024, 5, 1, 21))

    def test_2100_utc_starts_the_next_nairobi_day(self) -> None:
        # 2024-05-01 21:00:00Z is midnight on 2 May in Nairobi
        assert day_window(utc(2024, 5, 1, 21)) == (utc(2024, 5, 1, 21), utc(2024, 5, 2, 21))

    def test_a_utc_morning_is_the_same_nairobi_day_as_the_utc_date(self) -> None:
        assert day_window(utc(2024, 5, 1, 9)) == (utc(2024, 4, 30, 21), utc(2024, 5, 1, 21))

    def test_times_in_any_zone_give_the_same_window(self) -> None:
        nairobi = timezone(timedelta(hours=3))
        new_york = timezone(timedelta(hours=-4))
        moment = utc(2024, 12, 31, 22, 30)
        assert day_window(moment.astimezone(nairobi)) == day_window(moment.astimezone(new_york)) == day_window(moment)

    def test_the_window_crosses_month_and_year_ends(self) -> None:
        assert day_window(utc(2024, 12, 31, 21)) == (utc(2024, 12, 31, 21), utc(2025, 1, 1, 21))

    def test_naive_times_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="timezone-aware"):
            day_window(datetime(2024, 5, 1, 9))  # noqa: DTZ001 - the point of the test

    @PROPERTY
    @given(now=st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)))
    def test_every_moment_lies_in_a_24_hour_window_starting_at_2100_utc(self, now: datetime) -> None:
        start, end = day_window(now)
        assert start <= now < end
        assert end - start == timedelta(days=1)
        assert (start.hour, start.minute, start.second, start.microsecond) == (21, 0, 0, 0)
