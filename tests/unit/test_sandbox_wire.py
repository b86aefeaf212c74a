"""The simulators' wire helpers: Daraja and Deriv bodies serialised exactly as ``json.dumps`` would (with their
exact decimals), and Daraja's ``Timestamp`` check refusing what is not a real date and time."""

from __future__ import annotations

import json
import string
from decimal import Decimal
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay.sandbox import daraja_wire as wire
from penpay.sandbox.deriv import encode_json

scalars = st.none() | st.booleans() | st.integers() | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)


@given(values)
def test_a_body_is_the_compact_json_that_json_dumps_writes(value: object) -> None:
    assert wire.to_json(value) == json.dumps(value, separators=(",", ":"))


class _Kind(StrEnum):
    STK = "stk"


class _Code(IntEnum):
    OK = 0


@given(values | st.floats(allow_nan=False) | st.lists(st.floats(allow_nan=False)))
def test_a_deriv_message_is_the_compact_json_that_json_dumps_writes(value: object) -> None:
    assert encode_json(value) == json.dumps(value, separators=(",", ":"))


def test_subclasses_of_str_and_int_are_written_as_json_dumps_writes_them() -> None:
    body = {"kind": _Kind.STK, "code": _Code.OK, "ok": True}
    assert wire.to_json(body) == encode_json(body) == json.dumps(body, separators=(",", ":"))


def test_deriv_decimals_are_exact_numbers() -> None:
    assert encode_json({"balance": Decimal("12.50"), "n": [Decimal("0.10")]}) == '{"balance":12.50,"n":[0.10]}'


def test_decimals_are_written_verbatim_and_other_types_refused() -> None:
    body = {"Name": "Amount", "Value": wire.JsonNumber("100.00"), "Items": [wire.JsonNumber("1.50"), "é"]}
    assert wire.to_json(body) == '{"Name":"Amount","Value":100.00,"Items":[1.50,"\\u00e9"]}'
    with pytest.raises(TypeError, match="float"):
        wire.to_json({"Value": 1.5})


@pytest.mark.parametrize("value", ["20261201235959", "20240229000000", "00010101000000"])
def test_a_real_timestamp_is_accepted(value: str) -> None:
    assert wire.timestamp({"Timestamp": value}) == value


@pytest.mark.parametrize(
    "value",
    ["20261301000000", "20230229000000", "20261200000000", "20261201240000", "20261201006000", "00000101000000"],
)
def test_a_timestamp_that_is_no_date_and_time_is_refused(value: str) -> None:
    with pytest.raises(wire.DarajaError):
        wire.timestamp({"Timestamp": value})


@pytest.mark.parametrize("value", ["2026120123595", "2026-12-01T23:59", 20261201235959, None])
def test_a_timestamp_that_is_not_fourteen_digits_is_refused(value: object) -> None:
    with pytest.raises(wire.DarajaError):
        wire.timestamp({"Timestamp": value})


def test_receipts_and_tokens_are_drawn_from_their_alphabets() -> None:
    receipts = {wire.receipt("T") for _ in range(500)}
    assert len(receipts) == 500  # 36**9 of them: a repeat would be a broken draw
    assert all(len(r) == 10 and r[0] == "T" and r[1:].isalnum() and r[1:].upper() == r[1:] for r in receipts)
    assert {c for r in receipts for c in r[1:]} == set(string.ascii_uppercase + string.digits)  # every character
    token = wire.access_token()
    assert len(token) == 28 and token.isalnum() and token.isascii()
