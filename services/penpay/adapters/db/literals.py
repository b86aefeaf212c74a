"""The values of a script (``script.run_script``) as SQL literals, for the driver's text protocol.

A script cannot be a prepared statement, so its values travel escaped in its text. The API's deposit batch binds
about 100 values per deposit, and the driver's per-value ``literal`` (a method call, a type dispatch and an escape
function per value) cost ~0.8 µs each, ~2.8 µs for bytes and decimals: ~80 µs of the API's CPU per deposit, an
eighth of a ``POST /deposit``. The values PenPay binds are almost all text, integers, NULL, naive UTC datetimes,
bytes and decimals; :func:`literals` writes those itself (~0.15-0.55 µs each, ~20 µs per deposit) and hands
anything else (aware datetimes, booleans, …) to the driver's ``literal``.

Text is escaped as MySQL reads a single-quoted literal when backslashes escape (the server's default): the
backslash, the quote, and NUL, newline, carriage return and Ctrl-Z (written as escapes so the statement's text stays
one printable line, as the driver writes them). The double quote needs no escape inside single quotes and is left
as it is: JSON payloads, full of them, then need no escaping at all. When the session has ``NO_BACKSLASH_ESCAPES``
set, backslashes are ordinary characters, so every value goes to the driver, which knows that mode. The
connection's character set is utf8mb4, which has no multi-byte character ending in a quote or backslash byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from asyncmy.constants.SERVER_STATUS import SERVER_STATUS_NO_BACKSLASH_ESCAPES

Literal = Callable[[Any], str]

_ESCAPES = (("\\", "\\\\"), ("'", "\\'"), ("\0", "\\0"), ("\n", "\\n"), ("\r", "\\r"), ("\x1a", "\\Z"))


def text_literal(value: str) -> str:
    """A str as a single-quoted MySQL literal (backslash escapes on)."""
    if "\\" in value or "'" in value or "\0" in value or "\n" in value or "\r" in value or "\x1a" in value:
        for char, escaped in _ESCAPES:
            value = value.replace(char, escaped)
    return f"'{value}'"


def datetime_literal(value: datetime) -> str:
    """A naive datetime as the driver writes it: microseconds only when there are some."""
    return f"'{value.isoformat(' ')}'"


def bytes_literal(value: bytes) -> str:
    """Bytes as a hexadecimal (binary string) literal: no escaping, whatever the bytes."""
    return f"X'{value.hex()}'"


def decimal_literal(value: Decimal) -> str:
    """A finite decimal in plain notation, as the driver writes it (never an exponent)."""
    if not value.is_finite():
        raise ValueError(f"{value} has no SQL literal")
    return format(value, "f")


def _null(_: None) -> str:
    return "NULL"


_BY_TYPE: dict[type, Literal] = {
    str: text_literal,
    int: int.__repr__,
    type(None): _null,
    bytes: bytes_literal,
    Decimal: decimal_literal,
}


def literals(values: Iterable[Any], driver: Any) -> tuple[str, ...]:
    """Each value as an SQL literal; ``driver`` is the driver's connection (asyncmy), which writes the others."""
    fallback: Literal = driver.literal
    if driver.server_status & SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return tuple(fallback(v) for v in values)
    out: list[str] = []
    for value in values:
        kind = type(value)
        write = _BY_TYPE.get(kind)
        if write is not None:
            out.append(write(value))
        elif kind is datetime and value.tzinfo is None:
            out.append(datetime_literal(value))
        else:
            out.append(fallback(value))
    return tuple(out)
