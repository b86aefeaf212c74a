"""FX conversion never creates money, for any amount, mid rate and spread (hypothesis).

Worth is measured exactly (``Fraction``) at the applied rate of the side the customer trades on.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.fx import LockedRate, Side
from penpay_domain.money import Money
from tests.unit.domain_builders import PROPERTY, a_quote

# KES per USD has been ~70..160 for decades; a wide band around it, down to 1, keeps the search honest.
mids = st.decimals(min_value=Decimal(1), max_value=Decimal(100_000), places=6)
spreads = st.integers(min_value=0, max_value=9_999)
kes_amounts = st.integers(min_value=0, max_value=10**12)
usd_amounts = st.integers(min_value=0, max_value=10**12)


@st.composite
def quotes(draw: st.DrawFn) -> LockedRate:
    return a_quote(mid=str(draw(mids)), spread_bps=draw(spreads))


def rate(quote: LockedRate, side: Side) -> Fraction:
    return Fraction(quote.applied_rate(side))


class TestAppliedRates:
    @PROPERTY
    @given(quote=quotes())
    def test_the_applied_rates_bracket_the_mid_and_round_against_the_customer(self, quote: LockedRate) -> None:
        spread = Fraction(quote.spread_bps, 10_000)
        exact_buy, exact_sell = Fraction(quote.mid) * (1 + spread), Fraction(quote.mid) * (1 - spread)
        buy, sell = rate(quote, Side.CUSTOMER_BUYS_USD), rate(quote, Side.CUSTOMER_SELLS_USD)
        assert exact_buy <= buy < exact_buy + Fraction(1, 10**6)
        assert exact_sell - Fraction(1, 10**6) < sell <= exact_sell
        assert sell <= Fraction(quote.mid) <= buy


class TestDeposit:
    @PROPERTY
    @given(quote=quotes(), kes=kes_amounts)
    def test_the_usd_given_is_never_worth_more_than_the_kes_taken(self, quote: LockedRate, kes: int) -> None:
        usd = quote.kes_to_usd(Money.kes(kes))
        worth_in_kes = Fraction(usd.minor, 100) * rate(quote, Side.CUSTOMER_BUYS_USD)
        assert usd.minor >= 0
        assert worth_in_kes <= kes

    @PROPERTY
    @given(quote=quotes(), kes=kes_amounts)
    def test_the_usd_given_falls_short_by_less_than_one_cents_worth(self, quote: LockedRate, kes: int) -> None:
        buy = rate(quote, Side.CUSTOMER_BUYS_USD)
        usd = quote.kes_to_usd(Money.kes(kes))
        assert kes - Fraction(usd.minor, 100) * buy < buy / 100

    @PROPERTY
    @given(quote=quotes(), usd=st.integers(min_value=0, max_value=10**10))
    def test_kes_needed_for_usd_is_the_least_amount_that_buys_it(self, quote: LockedRate, usd: int) -> None:
        needed = quote.kes_needed_for_usd(Money.usd_cents(usd))
        assert quote.kes_to_usd(needed).minor >= usd
        if needed.minor > 0:
            assert quote.kes_to_usd(Money.kes(needed.minor - 1)).minor < usd


class TestWithdrawal:
    @PROPERTY
    @given(quote=quotes(), usd=usd_amounts)
    def test_the_kes_paid_is_never_worth_more_than_the_usd_taken(self, quote: LockedRate, usd: int) -> None:
        kes = quote.usd_to_kes(Money.usd_cents(usd))
        value = Fraction(usd, 100) * rate(quote, Side.CUSTOMER_SELLS_USD)
        assert 0 <= kes.minor <= value

    @PROPERTY
    @given(quote=quotes(), usd=usd_amounts)
    def test_the_kes_paid_falls_short_by_less_than_one_shilling(self, quote: LockedRate, usd: int) -> None:
        kes = quote.usd_to_kes(Money.usd_cents(usd))
        assert Fraction(usd, 100) * rate(quote, Side.CUSTOMER_SELLS_USD) - kes.minor < 1


class TestRoundTrips:
    @PROPERTY
    @given(quote=quotes(), kes=kes_amounts)
    def test_kes_to_usd_and_back_never_returns_more_kes(self, quote: LockedRate, kes: int) -> None:
        assert quote.usd_to_kes(quote.kes_to_usd(Money.kes(kes))).minor <= kes

    @PROPERTY
    @given(quote=quotes(), usd=usd_amounts)
    def test_usd_to_kes_and_back_never_returns_more_usd(self, quote: LockedRate, usd: int) -> None:
        assert quote.kes_to_usd(quote.usd_to_kes(Money.usd_cents(usd))).minor <= usd
