"""A unit of work's audit entries as ``audit_pending`` rows (``adapters.db.audit.pending_rows``): one row per run of
entries of one moment, every entry kept in order, each payload its canonical JSON text, which the chainer hashes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters.db.audit import Entry, canonical, pending_row, pending_rows

AT = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
TEXT = st.text(max_size=80)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
ENTRY = st.tuples(TEXT, TEXT, st.dictionaries(TEXT, JSON, max_size=4))


def _decoded(row: dict[str, Any]) -> list[list[str]]:
    entries: list[list[str]] = json.loads(row["entries"])
    assert row["entry_count"] == len(entries)
    return entries


def test_entries_of_one_moment_are_one_row() -> None:
    entries: list[tuple[str, Entry]] = [
        ("user:u1", ("ledger.pending", "t1:kes", {"postings": [["a", "b", 10, "KES"]]})),
        ("user:u1", ("deposit.requested", "t1", {"amount": 10})),
        ("mpesa", ("mpesa.callback_received", "t1", {"raw": 'é "quoted"'})),
    ]
    (row,) = pending_rows([(AT, actor, entry) for actor, entry in entries])
    assert row == pending_row(AT, entries)
    assert row["occurred_at"] == AT.replace(tzinfo=None)
    assert _decoded(row) == [
        [actor, action, subject, canonical(payload)] for actor, (action, subject, payload) in entries
    ]


def test_a_new_moment_starts_a_new_row() -> None:
    later = AT + timedelta(microseconds=1)
    entry: Entry = ("test.row", "s", {})
    rows = pending_rows([(AT, "a", entry), (AT, "b", entry), (later, "c", entry), (AT, "d", entry)])
    assert [(r["occurred_at"], [e[0] for e in _decoded(r)]) for r in rows] == [
        (AT.replace(tzinfo=None), ["a", "b"]),
        (later.replace(tzinfo=None), ["c"]),
        (AT.replace(tzinfo=None), ["d"]),
    ]
    assert pending_rows([]) == []


def test_names_longer_than_their_columns_are_cut_as_before() -> None:
    (row,) = pending_rows([(AT, "x" * 70, ("y" * 70, "z" * 70, {}))])
    assert _decoded(row) == [["x" * 64, "y" * 64, "z" * 64, "{}"]]


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2), TEXT, ENTRY), max_size=12))
def test_every_entry_once_in_order_with_its_payload_text(buffered: list[tuple[int, str, Entry]]) -> None:
    moments = [(AT + timedelta(seconds=m), actor, entry) for m, actor, entry in buffered]
    rows = pending_rows(moments)
    assert all(r["entry_count"] >= 1 for r in rows)
    assert [e for r in rows for e in _decoded(r)] == [
        [actor[:64], action[:64], subject[:64], canonical(payload)] for _, actor, (action, subject, payload) in moments
    ]
