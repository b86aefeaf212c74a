"""Fee policy: basis points of the KES amount rounded up, plus a fixed part, clamped, never above the amount."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.errors import InvalidInput
from penpay_domain.fees import NO_FEE, FeePolicy
from penpay_domain.money import Money
from tests.unit.domain_builders import PROPERTY


class TestFeePolicy:
    def test_no_fee_charges_nothing(self) -> None:
        assert NO_FEE.fee_for(Money.kes(1_000)) == Money.kes(0)

    def test_basis_points_of_the_amount(self) -> None:
        assert FeePolicy(bps=150).fee_for(Money.kes(1_000)) == Money.kes(15)  # 1.5% of 1000

    def test_a_fractional_fee_is_rounded_up_to_a_whole_shilling(self) -> None:
        assert FeePolicy(bps=150).fee_for(Money.kes(1_001)) == Money.kes(16)  # 15.015 -> 16
        assert FeePolicy(bps=1).fee_for(Money.kes(1)) == Money.kes(1)  # 0.0001 -> 1

    def test_the_fixed_part_is_added(self) -> None:
        assert FeePolicy(bps=100, fixed_kes=10).fee_for(Money.kes(1_000)) == Money.kes(20)

    def test_the_minimum_applies_to_small_amounts(self) -> None:
        policy = FeePolicy(bps=100, fixed_kes=10, minimum_kes=25)
        assert policy.fee_for(Money.kes(1_000)) == Money.kes(25)  # 10 + 10 < 25
        assert policy.fee_for(Money.kes(5_000)) == Money.kes(60)  # 50 + 10 > 25

    def test_the_maximum_caps_large_amounts(self) -> None:
        assert FeePolicy(bps=100, maximum_kes=30).fee_for(Money.kes(1_000_000)) == Money.kes(30)

    def test_the_fee_is_never_more_than_the_amount(self) -> None:
        assert FeePolicy(fixed_kes=50).fee_for(Money.kes(10)) == Money.kes(10)
        assert FeePolicy(minimum_kes=50).fee_for(Money.kes(0)) == Money.kes(0)

    def test_fees_are_computed_on_kes(self) -> None:
        with pytest.raises(InvalidInput, match="KES"):
            FeePolicy(bps=100).fee_for(Money.usd_cents(1_000))

    def test_rounding_is_exact_for_amounts_beyond_float_precision(self) -> None:
        # 1 bp of 10**17 + 1 is 10**13 + 0.0001: a float quotient loses the fraction and the round-up with it
        assert FeePolicy(bps=1).fee_for(Money.kes(10**17 + 1)) == Money.kes(10**13 + 1)

    @pytest.mark.parametrize(
        "kwargs",
        [{"bps": -1}, {"fixed_kes": -1}, {"minimum_kes": -1}, {"bps": 1.5}, {"fixed_kes": True}],
        ids=repr,
    )
    def test_parts_are_non_negative_integers(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(InvalidInput, match="non-negative integer"):
            FeePolicy(**kwargs)  # type: ignore[arg-type]

    def test_the_maximum_cannot_be_below_the_minimum(self) -> None:
        with pytest.raises(InvalidInput, match="below the minimum"):
            FeePolicy(minimum_kes=10, maximum_kes=9)


policies = st.builds(
    FeePolicy,
    bps=st.integers(0, 10_000),
    fixed_kes=st.integers(0, 1_000),
    minimum_kes=st.integers(0, 100),
    maximum_kes=st.none() | st.integers(100, 10_000),
)


class TestFeeProperties:
    @PROPERTY
    @given(policy=policies, amount=st.integers(0, 10**15))
    def test_the_fee_lies_between_zero_and_the_amount(self, policy: FeePolicy, amount: int) -> None:
        fee = policy.fee_for(Money.kes(amount))
        assert 0 <= fee.minor <= amount

    @PROPERTY
    @given(bps=st.integers(0, 10_000), amount=st.integers(0, 10**20))
    def test_the_bps_part_is_the_exact_share_rounded_up_by_less_than_a_shilling(self, bps: int, amount: int) -> None:
        exact = Fraction(amount * bps, 10_000)
        fee = FeePolicy(bps=bps).fee_for(Money.kes(amount)).minor
        assert exact <= fee < exact + 1
