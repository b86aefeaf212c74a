"""Compact JSON text for the simulators' wire bodies, with numbers the providers write exactly (Daraja's ``100.00``,
Deriv's decimal balances), which ``json.dumps`` cannot: it knows no decimal type and has no verbatim number.

:func:`compact_json` writes dicts, lists, strings, integers, booleans and None exactly as ``json.dumps`` would
(compact separators, strings ASCII-escaped by the function ``json.dumps`` itself calls) and hands every other value
to ``other``: the caller's rule for its exact numbers, which raises ``TypeError`` for what it does not take. A
``json.dumps`` call per key and value, as the simulators first did, was a fifth of the sandbox's CPU under load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as quote

__all__ = ["compact_json", "quote"]


def compact_json(value: object, other: Callable[[object], str]) -> str:
    kind = type(value)
    if kind is str:
        return quote(value)  # type: ignore[arg-type]
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{quote(str(k))}:{compact_json(v, other)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(compact_json(v, other) for v in value) + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return other(value)
