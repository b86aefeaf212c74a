"""FX: a locked quote, its applied rates (rounded against the customer) and conversion floored to the minor unit.

Expected values below are worked out by hand from the rule in ``penpay_domain.fx``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from penpay_domain.errors import CurrencyMismatch, InvalidInput, QuoteExpired
from penpay_domain.fx import LockedRate, Side, convert
from penpay_domain.ids import QuoteId
from penpay_domain.money import Currency, Money
from tests.unit.domain_builders import NOW, a_quote

BUY, SELL = Side.CUSTOMER_BUYS_USD, Side.CUSTOMER_SELLS_USD


class TestAppliedRate:
    def test_the_spread_is_added_when_the_customer_buys_and_taken_off_when_they_sell(self) -> None:
        quote = a_quote(mid="129.50", spread_bps=150)
        assert quote.applied_rate(BUY) == Decimal("131.442500")  # 129.50 * 1.015
        assert quote.applied_rate(SELL) == Decimal("127.557500")  # 129.50 * 0.985

    def test_the_rate_is_rounded_to_six_places_against_the_customer(self) -> None:
        quote = a_quote(mid="129.123457", spread_bps=33)
        # 129.123457 * 1.0033 = 129.5495644081 -> up (the buyer pays a touch more KES per USD)
        assert quote.applied_rate(BUY) == Decimal("129.549565")
        # 129.123457 * 0.9967 = 128.6973495919 -> down (the seller gets a touch fewer KES per USD)
        assert quote.applied_rate(SELL) == Decimal("128.697349")

    def test_a_zero_spread_applies_the_mid_rate_both_ways(self) -> None:
        quote = a_quote(mid="130", spread_bps=0)
        assert quote.applied_rate(BUY) == quote.applied_rate(SELL) == Decimal("130")


class TestConversion:
    def test_a_deposit_converts_kes_to_usd_cents_rounded_down(self) -> None:
        # 1000 KES / 131.4425 = 7.6078... USD -> 7.60
        assert a_quote(mid="129.50", spread_bps=150).kes_to_usd(Money.kes(1000)) == Money.usd_cents(760)

    def test_a_withdrawal_converts_usd_to_whole_kes_rounded_down(self) -> None:
        # 10.00 USD * 127.5575 = 1275.575 KES -> 1275
        assert a_quote(mid="129.50", spread_bps=150).usd_to_kes(Money.usd_cents(1000)) == Money.kes(1275)

    def test_an_exact_conversion_loses_nothing(self) -> None:
        quote = a_quote(mid="100", spread_bps=0)
        assert quote.kes_to_usd(Money.kes(1000)) == Money.usd_cents(1000)
        assert quote.usd_to_kes(Money.usd_cents(1234)) == Money.kes(1234)

    def test_an_amount_worth_less_than_a_cent_converts_to_zero(self) -> None:
        assert a_quote(mid="129.50").kes_to_usd(Money.kes(1)) == Money.usd_cents(0)

    def test_kes_needed_for_usd_is_the_fewest_shillings_that_buy_the_amount(self) -> None:
        quote = a_quote(mid="129.50", spread_bps=150)
        # 7.60 USD * 131.4425 = 998.963 KES -> 999
        needed = quote.kes_needed_for_usd(Money.usd_cents(760))
        assert needed == Money.kes(999)
        assert quote.kes_to_usd(needed) == Money.usd_cents(760)
        assert quote.kes_to_usd(needed - Money.kes(1)) == Money.usd_cents(759)

    def test_convert_uses_the_given_rate_in_both_directions(self) -> None:
        assert convert(Money.kes(1300), Currency.USD, Decimal("130")) == Money.usd_cents(1000)
        assert convert(Money.usd_cents(1), Currency.KES, Decimal("130")) == Money.kes(1)  # 1.30 -> 1


class TestCurrencyChecks:
    def test_kes_to_usd_takes_kes(self) -> None:
        with pytest.raises(CurrencyMismatch):
            a_quote().kes_to_usd(Money.usd_cents(100))

    def test_usd_to_kes_takes_usd(self) -> None:
        with pytest.raises(CurrencyMismatch):
            a_quote().usd_to_kes(Money.kes(100))

    def test_kes_needed_for_usd_takes_usd(self) -> None:
        with pytest.raises(CurrencyMismatch):
            a_quote().kes_needed_for_usd(Money.kes(100))

    def test_converting_into_the_same_currency_is_an_error(self) -> None:
        with pytest.raises(CurrencyMismatch, match="already"):
            convert(Money.kes(100), Currency.KES, Decimal("130"))

    def test_a_sell_rate_that_rounds_to_zero_is_refused_rather_than_paying_nothing(self) -> None:
        quote = a_quote(mid="0.000001", spread_bps=1)  # 0.000000999... floors to 0.000000
        with pytest.raises(InvalidInput, match="positive"):
            quote.usd_to_kes(Money.usd_cents(100))

    @pytest.mark.parametrize("rate", [Decimal(0), Decimal(-130)])
    def test_a_non_positive_rate_is_refused(self, rate: Decimal) -> None:
        with pytest.raises(InvalidInput):
            convert(Money.kes(100), Currency.USD, rate)


class TestExpiry:
    def test_a_quote_is_valid_until_just_before_it_expires(self) -> None:
        quote = a_quote(issued_at=NOW, ttl=timedelta(minutes=2))
        just_before = NOW + timedelta(minutes=2) - timedelta(microseconds=1)
        assert not quote.is_expired(just_before)
        quote.ensure_valid(just_before)

    def test_a_quote_has_expired_at_its_expiry_time(self) -> None:
        quote = a_quote(issued_at=NOW, ttl=timedelta(minutes=2))
        assert quote.is_expired(NOW + timedelta(minutes=2))
        with pytest.raises(QuoteExpired) as caught:
            quote.ensure_valid(NOW + timedelta(minutes=2))
        assert caught.value.code == "fx_quote_expired"


class TestQuoteValidation:
    def _quote(self, *, mid: object = Decimal("129.5"), spread_bps: object = 150, ttl_s: int = 60) -> LockedRate:
        return LockedRate(
            quote_id=QuoteId("Q1"),
            mid=mid,  # type: ignore[arg-type]
            spread_bps=spread_bps,  # type: ignore[arg-type]
            issued_at=NOW,
            expires_at=NOW + timedelta(seconds=ttl_s),
        )

    def test_a_quote_carries_its_pair_and_id(self) -> None:
        quote = self._quote()
        assert (quote.pair, quote.quote_id) == ("USD/KES", "Q1")

    @pytest.mark.parametrize(
        "mid", [129.5, "129.5", Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity")], ids=repr
    )
    def test_the_mid_rate_is_a_positive_finite_decimal(self, mid: object) -> None:
        with pytest.raises(InvalidInput, match="positive Decimal"):
            self._quote(mid=mid)

    @pytest.mark.parametrize("spread", [-1, 10_000, 1.5, True], ids=repr)
    def test_the_spread_is_whole_basis_points_below_100_percent(self, spread: object) -> None:
        with pytest.raises(InvalidInput, match="basis points"):
            self._quote(spread_bps=spread)

    @pytest.mark.parametrize("ttl_s", [0, -1])
    def test_a_quote_expires_after_it_is_issued(self, ttl_s: int) -> None:
        with pytest.raises(InvalidInput, match="expire after"):
            self._quote(ttl_s=ttl_s)
