"""Identifiers: ULID transaction ids, payout and quote ids, Deriv login ids and idempotency keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain.errors import InvalidInput, InvalidLoginId
from penpay_domain.ids import (
    IdempotencyKey,
    UserId,
    new_payout_id,
    new_quote_id,
    new_transaction_id,
    parse_deriv_loginid,
    parse_transaction_id,
    parse_transaction_id_hex,
    transaction_id_hex,
)
from tests.unit.domain_builders import NOW, PROPERTY

CROCKFORD_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
# hypothesis takes naive bounds and makes the drawn values aware through ``timezones``
EARLIEST, LATEST = datetime(1971, 1, 1), datetime(2200, 1, 1)  # noqa: DTZ001
moments = st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC))


class TestTransactionId:
    def test_a_transaction_id_is_26_crockford_base32_characters(self) -> None:
        assert CROCKFORD_ULID.match(new_transaction_id(NOW))

    def test_the_id_encodes_the_time_in_the_first_ten_characters(self) -> None:
        # The ULID specification's example time: 1469918176385 ms -> 01ARYZ6S41
        moment = datetime(2016, 7, 30, 22, 36, 16, 385_000, tzinfo=UTC)
        assert new_transaction_id(moment, bytes(10)) == "01ARYZ6S41" + "0" * 16

    def test_two_ids_made_at_the_same_time_differ(self) -> None:
        assert new_transaction_id(NOW) != new_transaction_id(NOW)

    def test_the_randomness_is_exactly_80_bits(self) -> None:
        with pytest.raises(InvalidInput, match="10 random bytes"):
            new_transaction_id(NOW, bytes(9))

    def test_times_before_the_epoch_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="out of range"):
            new_transaction_id(datetime(1969, 12, 31, tzinfo=UTC))

    @PROPERTY
    @given(
        first=moments,
        gap_ms=st.integers(min_value=1, max_value=10**9),
        rnd_a=st.binary(min_size=10, max_size=10),
        rnd_b=st.binary(min_size=10, max_size=10),
    )
    def test_ids_sort_by_creation_time(self, first: datetime, gap_ms: int, rnd_a: bytes, rnd_b: bytes) -> None:
        first = first.replace(microsecond=first.microsecond // 1000 * 1000)
        later = first + timedelta(milliseconds=gap_ms)
        assert new_transaction_id(first, rnd_a) < new_transaction_id(later, rnd_b)

    @PROPERTY
    @given(moment=moments, rnd=st.binary(min_size=10, max_size=10))
    def test_a_made_id_parses_back_to_itself(self, moment: datetime, rnd: bytes) -> None:
        txn_id = new_transaction_id(moment, rnd)
        assert parse_transaction_id(txn_id) == txn_id
        assert parse_transaction_id(f" {txn_id.lower()} ") == txn_id

    @pytest.mark.parametrize(
        "text",
        ["", "01ARYZ6S41", "01ARYZ6S410000000000000000X", "01ARYZ6S41000000000000000I", "01ARYZ6S41-00000000000000"],
    )
    def test_anything_else_is_not_a_transaction_id(self, text: str) -> None:
        with pytest.raises(InvalidInput, match="not a transaction id"):
            parse_transaction_id(text)


class TestPayoutAndQuoteIds:
    def test_a_payout_id_is_at_most_20_alphanumerics_as_daraja_requires(self) -> None:
        payout_id = new_payout_id(NOW)
        assert len(payout_id) <= 20
        assert payout_id.isalnum() and payout_id.isascii()

    def test_payout_ids_start_with_the_time_and_differ(self) -> None:
        a, b = new_payout_id(NOW), new_payout_id(NOW)
        assert a != b
        assert a[:10] == b[:10] == new_transaction_id(NOW)[:10]

    def test_a_quote_id_is_q_and_a_ulid(self) -> None:
        quote_id = new_quote_id(NOW)
        assert quote_id.startswith("Q")
        assert CROCKFORD_ULID.match(quote_id[1:])


class TestDerivLoginId:
    @pytest.mark.parametrize(
        ("text", "loginid"),
        [
            ("CR1234567", "CR1234567"),
            ("VRTC90000001", "VRTC90000001"),
            ("MF123456", "MF123456"),
            ("MLT123456", "MLT123456"),
            ("MX123456", "MX123456"),
            ("CRW1234", "CRW1234"),
            ("  cr1234567 ", "CR1234567"),
        ],
    )
    def test_a_landing_company_prefix_and_digits_is_a_login_id(self, text: str, loginid: str) -> None:
        assert parse_deriv_loginid(text) == loginid

    @pytest.mark.parametrize(
        "text",
        ["", "CR", "1234567", "XX1234567", "CR12", "CR1234567890123", "CR-1234567", "CR 1234567", "CR12345a7"],
    )
    def test_anything_else_is_refused_with_an_example(self, text: str) -> None:
        with pytest.raises(InvalidLoginId, match=re.escape("e.g. CR1234567")) as caught:
            parse_deriv_loginid(text)
        assert caught.value.code == "invalid_deriv_loginid"

    def test_a_login_id_is_a_string(self) -> None:
        with pytest.raises(InvalidLoginId):
            parse_deriv_loginid(1234567)  # type: ignore[arg-type]


class TestIdempotencyKey:
    def test_a_printable_ascii_key_up_to_255_characters_is_accepted(self) -> None:
        assert IdempotencyKey(UserId("u1"), "a" * 255).key == "a" * 255
        assert IdempotencyKey(UserId("u1"), "deposit-2024-05-01T09:00:00Z#1").key == "deposit-2024-05-01T09:00:00Z#1"

    @pytest.mark.parametrize(
        "key",
        ["", "a" * 256, "has space", "tab\there", "caf\u00e9", "line\n"],
        ids=["empty", "256", "space", "tab", "é", "newline"],
    )
    def test_other_keys_are_refused(self, key: str) -> None:
        with pytest.raises(InvalidInput, match="idempotency key"):
            IdempotencyKey(UserId("u1"), key)

    def test_a_key_is_scoped_to_its_user(self) -> None:
        assert IdempotencyKey(UserId("u1"), "k") == IdempotencyKey(UserId("u1"), "k")
        assert IdempotencyKey(UserId("u1"), "k") != IdempotencyKey(UserId("u2"), "k")


@given(st.binary(min_size=10, max_size=10))
def test_transaction_ids_round_trip_through_their_hex_form(randomness: bytes) -> None:
    txn_id = new_transaction_id(NOW, randomness)
    hex_id = transaction_id_hex(txn_id)
    assert len(hex_id) == 32 and set(hex_id) <= set("0123456789abcdef")
    assert parse_transaction_id_hex(hex_id) == txn_id


@pytest.mark.parametrize("bad", ["", "0" * 31, "g" * 32, "0" * 33, "ABCDEF" + "0" * 26])
def test_a_malformed_hex_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_transaction_id_hex(bad)
