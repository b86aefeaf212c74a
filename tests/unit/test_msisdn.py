"""Kenyan MSISDNs: every form people type normalises to 254 + 9 digits; every other form is refused with a reason."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.errors import InvalidMsisdn
from penpay_domain.msisdn import Msisdn, mask_msisdn, parse_msisdn
from tests.unit.domain_builders import PROPERTY


class TestAcceptedForms:
    @pytest.mark.parametrize(
        ("typed", "normalised"),
        [
            ("0712345678", "254712345678"),
            ("0112345678", "254112345678"),
            ("+254712345678", "254712345678"),
            ("254712345678", "254712345678"),
            ("+254112345678", "254112345678"),
            ("254112345678", "254112345678"),
            ("0712 345 678", "254712345678"),
            ("0712-345-678", "254712345678"),
            ("+254 712 345 678", "254712345678"),
            ("+254-712-345-678", "254712345678"),
            ("(0712) 345678", "254712345678"),
            ("  0712345678\n", "254712345678"),
            ("0712\u00a0345\u00a0678", "254712345678"),  # no-break spaces pasted from a web page
        ],
    )
    def test_the_forms_people_type_normalise_to_254_and_nine_digits(self, typed: str, normalised: str) -> None:
        assert parse_msisdn(typed) == normalised


class TestRejectedForms:
    @pytest.mark.parametrize(
        ("typed", "reason"),
        [
            ("", "the phone number is empty"),
            ("  - ", "the phone number is empty"),
            ("07123abc78", "contains characters other than digits"),
            ("O712345678", "contains characters other than digits"),  # a letter O for a zero
            ("0712\u0663\u0664\u0665678", "contains characters other than digits"),  # non-ASCII digits
            ("++254712345678", "contains characters other than digits"),
            ("071234567", "has 8 digits after the prefix"),
            ("07123456789", "has 10 digits after the prefix"),
            ("+2547123456", "has 7 digits after the prefix"),
            ("+254 0712345678", "has 10 digits after the prefix"),
            ("2547", "has 1 digit after the prefix"),
            ("0201234567", "not a Kenyan mobile number: it must be 07"),  # Nairobi landline
            ("+254201234567", "not a Kenyan mobile number: it must be 07"),
            ("0812345678", "not a Kenyan mobile number: it must be 07"),
            ("+255712345678", "not a Kenyan number: international numbers must start with +254"),
            ("+1 415 555 0100", "not a Kenyan number"),
            ("255712345678", "start with 07, 01, +254 or 254"),
            ("712345678", "start with 07, 01, +254 or 254"),
        ],
    )
    def test_each_wrong_form_is_refused_with_its_reason(self, typed: str, reason: str) -> None:
        with pytest.raises(InvalidMsisdn, match=re.escape(reason)) as caught:
            parse_msisdn(typed)
        assert caught.value.code == "invalid_msisdn"

    def test_a_phone_number_is_a_string(self) -> None:
        with pytest.raises(InvalidMsisdn, match="is a string"):
            parse_msisdn(712345678)  # type: ignore[arg-type]


def test_a_masked_number_shows_only_its_ends() -> None:
    assert mask_msisdn(Msisdn("254712345678")) == "2547****5678"


subscriber = st.tuples(st.sampled_from("71"), st.text("0123456789", min_size=8, max_size=8)).map("".join)


@st.composite
def typed_forms(draw: st.DrawFn, national: str) -> str:
    prefix = draw(st.sampled_from(["0", "254", "+254", "+254 ", "254-"]))
    digits = list(national)
    out = prefix
    for digit in digits:
        out += draw(st.sampled_from(["", "", "", " ", "-"])) + digit
    return out


class TestNormalisationProperties:
    @PROPERTY
    @given(national=subscriber, data=st.data())
    def test_every_typed_form_of_a_number_normalises_to_the_same_msisdn(
        self, national: str, data: st.DataObject
    ) -> None:
        assert parse_msisdn(data.draw(typed_forms(national))) == "254" + national

    @PROPERTY
    @given(national=subscriber, data=st.data())
    def test_normalising_a_normalised_number_is_the_identity(self, national: str, data: st.DataObject) -> None:
        once = parse_msisdn(data.draw(typed_forms(national)))
        assert parse_msisdn(once) == once
        assert len(once) == 12 and once.isdigit()
