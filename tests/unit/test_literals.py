"""The script's own SQL literals (``adapters.db.literals``) against the driver's: the same text but for the double
quote, which needs no escape inside single quotes; the same datetimes and decimals; bytes in hexadecimal; anything
else written by the driver. ``tests/integration/test_script.py`` sends them all to MariaDB and reads them back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from asyncmy import converters
from asyncmy.constants.SERVER_STATUS import SERVER_STATUS_NO_BACKSLASH_ESCAPES
from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters.db.literals import bytes_literal, datetime_literal, decimal_literal, literals, text_literal


@dataclass
class DriverStandIn:
    """What ``literals`` asks of the driver's connection: its status flags, and its literal for the rest."""

    server_status: int = 0
    asked: list[Any] = field(default_factory=list)

    def literal(self, value: Any) -> str:
        self.asked.append(value)
        return f"<driver {value!r}>"


@given(st.text())
def test_text_is_escaped_as_the_driver_escapes_it_but_for_the_double_quote(value: str) -> None:
    assert text_literal(value) == converters.escape_str(value).replace('\\"', '"')


@given(st.text(alphabet=st.sampled_from("\\'\"\0\n\r\x1a%sa")))
def test_every_special_character_in_any_order(value: str) -> None:
    assert text_literal(value) == converters.escape_str(value).replace('\\"', '"')


@given(st.datetimes())
def test_a_naive_datetime_is_written_as_the_driver_writes_it(value: datetime) -> None:
    assert datetime_literal(value) == converters.escape_datetime(value)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_is_written_as_the_driver_writes_it(value: Decimal) -> None:
    assert decimal_literal(value) == converters.decimal2literal(value, None)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_a_decimal_that_is_no_number_is_refused(value: Decimal) -> None:
    with pytest.raises(ValueError, match="no SQL literal"):
        decimal_literal(value)


@given(st.binary())
def test_bytes_are_a_hexadecimal_literal(value: bytes) -> None:
    assert bytes_literal(value) == "X'" + "".join(f"{b:02x}" for b in value) + "'"


def test_the_common_types_are_written_here_and_the_others_by_the_driver() -> None:
    driver = DriverStandIn()
    aware = datetime(2026, 12, 1, tzinfo=UTC)
    naive = datetime(2026, 12, 1, 9, 30)  # noqa: DTZ001 - the database's UTC datetimes are naive
    out = literals(["it's", 42, None, naive, b"\x00'", Decimal("129.50"), True, aware], driver)
    assert out[:6] == ("'it\\'s'", "42", "NULL", "'2026-12-01 09:30:00'", "X'0027'", "129.50")
    assert driver.asked == [True, aware]
    assert out[6:] == tuple(f"<driver {v!r}>" for v in driver.asked)


def test_with_no_backslash_escapes_every_value_goes_to_the_driver() -> None:
    driver = DriverStandIn(server_status=SERVER_STATUS_NO_BACKSLASH_ESCAPES)
    assert literals(["a\\b", 1], driver) == ("<driver 'a\\\\b'>", "<driver 1>")
