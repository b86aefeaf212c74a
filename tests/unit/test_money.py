"""Money: integer minor units with a currency; exact parsing and printing; no cross-currency arithmetic."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.errors import CurrencyMismatch, InvalidAmount
from penpay_domain.money import Currency, Money, require_positive
from tests.unit.domain_builders import PROPERTY

KES, USD = Currency.KES, Currency.USD

currencies = st.sampled_from(list(Currency))
any_money = st.builds(Money, st.integers(), currencies)


class TestConstruction:
    def test_money_is_an_integer_number_of_minor_units_and_a_currency(self) -> None:
        m = Money(1250, USD)
        assert (m.minor, m.currency) == (1250, USD)
        assert Money.usd_cents(1250) == m
        assert Money.kes(700) == Money(700, KES)
        assert Money.zero(KES) == Money(0, KES)

    def test_currencies_know_their_minor_unit(self) -> None:
        assert KES.exponent == 0  # whole shillings: M-Pesa moves no cents
        assert USD.exponent == 2

    @pytest.mark.parametrize(
        "minor",
        [True, False, Decimal("12"), "12", 12.0, 0.1, Fraction(12), None],
        ids=["bool-true", "bool-false", "decimal", "str", "float", "float-fraction", "fraction", "none"],
    )
    def test_anything_but_an_int_is_refused(self, minor: object) -> None:
        with pytest.raises(InvalidAmount, match="integer number of minor units"):
            Money(minor, KES)  # type: ignore[arg-type]

    def test_an_unknown_currency_is_refused(self) -> None:
        with pytest.raises(InvalidAmount, match="unknown currency"):
            Money(1, "EUR")  # type: ignore[arg-type]

    def test_a_currency_code_string_is_not_a_currency(self) -> None:
        with pytest.raises(InvalidAmount):
            Money(1, "KES")  # type: ignore[arg-type]

    def test_money_is_immutable(self) -> None:
        m = Money.kes(10)
        with pytest.raises(FrozenInstanceError):
            m.minor = 11  # type: ignore[misc]

    def test_equal_money_hashes_equal(self) -> None:
        assert {Money.kes(10), Money.kes(10), Money.usd_cents(10)} == {Money.kes(10), Money.usd_cents(10)}


class TestArithmetic:
    def test_same_currency_addition_and_subtraction(self) -> None:
        assert Money.kes(700) + Money.kes(300) == Money.kes(1000)
        assert Money.usd_cents(1250) - Money.usd_cents(1300) == Money.usd_cents(-50)
        assert -Money.kes(5) == Money.kes(-5)

    def test_cross_currency_addition_is_an_error(self) -> None:
        with pytest.raises(CurrencyMismatch, match="cannot combine KES with USD"):
            Money.kes(1) + Money.usd_cents(1)

    def test_cross_currency_subtraction_is_an_error(self) -> None:
        with pytest.raises(CurrencyMismatch):
            Money.usd_cents(1) - Money.kes(1)

    @pytest.mark.parametrize("compare", [operator.lt, operator.le, operator.gt, operator.ge])
    def test_cross_currency_comparison_is_an_error(self, compare: Callable[[Money, Money], bool]) -> None:
        with pytest.raises(CurrencyMismatch):
            compare(Money.kes(1), Money.usd_cents(1))

    def test_money_does_not_mix_with_plain_numbers(self) -> None:
        with pytest.raises(TypeError):
            Money.kes(1) + 1  # type: ignore[operator]
        with pytest.raises(TypeError):
            _ = Money.kes(1) < 2  # type: ignore[operator]

    def test_equal_amounts_in_different_currencies_are_not_equal(self) -> None:
        assert Money.kes(100) != Money.usd_cents(100)

    def test_same_currency_ordering(self) -> None:
        assert Money.kes(1) < Money.kes(2) <= Money.kes(2)
        assert Money.kes(3) > Money.kes(2) >= Money.kes(2)

    def test_sign_predicates(self) -> None:
        assert Money.kes(1).is_positive and not Money.kes(0).is_positive and not Money.kes(-1).is_positive
        assert Money.kes(0).is_zero and not Money.kes(1).is_zero

    def test_require_positive_passes_positive_amounts_through(self) -> None:
        assert require_positive(Money.kes(1)) == Money.kes(1)

    @pytest.mark.parametrize("minor", [0, -1])
    def test_require_positive_refuses_zero_and_negative(self, minor: int) -> None:
        with pytest.raises(InvalidAmount, match="deposit must be positive"):
            require_positive(Money.kes(minor), "deposit")

    @PROPERTY
    @given(a=st.integers(), b=st.integers(), currency=currencies)
    def test_arithmetic_is_exact_integer_arithmetic(self, a: int, b: int, currency: Currency) -> None:
        assert (Money(a, currency) + Money(b, currency)).minor == a + b
        assert (Money(a, currency) - Money(b, currency)).minor == a - b
        assert (Money(a, currency) < Money(b, currency)) == (a < b)


class TestParse:
    @pytest.mark.parametrize(
        ("text", "currency", "minor"),
        [
            ("12.50", USD, 1250),
            ("12.5", USD, 1250),
            ("12", USD, 1200),
            ("0.01", USD, 1),
            ("0", USD, 0),
            ("1000", KES, 1000),
            ("1000.00", KES, 1000),  # trailing zeros are not extra precision
            ("007", KES, 7),
            ("  12.50\n", USD, 1250),
            ("+3", KES, 3),
            ("-12.50", USD, -1250),  # parse is exact; positivity is the caller's rule (require_positive)
            ("123456789012345678901234567890.12", USD, 12345678901234567890123456789012),
        ],
    )
    def test_a_decimal_string_parses_exactly(self, text: str, currency: Currency, minor: int) -> None:
        assert Money.parse(text, currency) == Money(minor, currency)

    @pytest.mark.parametrize(
        ("text", "currency"),
        [
            ("12.505", USD),
            ("0.001", USD),
            ("1.5", KES),
            ("999.01", KES),
            # 29 significant digits: 28-digit Decimal arithmetic would round the extra cent fraction away
            ("1.0000000000000000000000000001", USD),
        ],
    )
    def test_more_decimals_than_the_currency_has_is_refused(self, text: str, currency: Currency) -> None:
        with pytest.raises(InvalidAmount, match=f"more than {currency.exponent} decimal places for {currency.value}"):
            Money.parse(text, currency)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            "abc",
            "12.5.0",
            "1,000",
            "12 50",
            "$12",
            "12USD",
            "--1",
            "+-1",
            "-",
            ".5",
            "5.",
            "NaN",
            "Infinity",
            "-inf",
            "1e2",
            "1_000",
            "0x10",
            "\u0663",  # ARABIC-INDIC DIGIT THREE: Decimal() would read it as 3
        ],
    )
    def test_junk_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidAmount, match="is not a decimal amount"):
            Money.parse(text, USD)

    @pytest.mark.parametrize("value", [12, 12.5, Decimal("12.50"), None])
    def test_only_strings_are_parsed(self, value: object) -> None:
        with pytest.raises(InvalidAmount, match="decimal strings"):
            Money.parse(value, USD)  # type: ignore[arg-type]


class TestPrinting:
    @pytest.mark.parametrize(
        ("money", "text"),
        [
            (Money.usd_cents(1250), "12.50"),
            (Money.usd_cents(5), "0.05"),
            (Money.usd_cents(-5), "-0.05"),
            (Money.usd_cents(0), "0.00"),
            (Money.usd_cents(100), "1.00"),
            (Money.kes(1000), "1000"),
            (Money.kes(-7), "-7"),
            (Money.kes(0), "0"),
        ],
    )
    def test_to_str_prints_exactly_the_currency_decimals(self, money: Money, text: str) -> None:
        assert money.to_str() == text

    def test_str_names_the_currency(self) -> None:
        assert str(Money.usd_cents(1250)) == "12.50 USD"
        assert str(Money.kes(1000)) == "1000 KES"

    def test_to_decimal_is_the_major_unit_amount(self) -> None:
        assert Money.usd_cents(1250).to_decimal() == Decimal("12.50")
        assert Money.kes(1000).to_decimal() == Decimal(1000)

    @PROPERTY
    @given(money=any_money)
    def test_to_str_then_parse_is_the_identity(self, money: Money) -> None:
        assert Money.parse(money.to_str(), money.currency) == money

    @PROPERTY
    @given(money=any_money)
    def test_to_decimal_is_exact_at_any_size(self, money: Money) -> None:
        assert Fraction(money.to_decimal()) * 10**money.currency.exponent == money.minor
