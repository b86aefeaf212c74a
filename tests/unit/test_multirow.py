"""The statements and ids of a multi-row insert, both where the server numbers it consecutively and where it does
not (MySQL 8's ``innodb_autoinc_lock_mode=2``: one statement per row, each with its own id)."""

from __future__ import annotations

from penpay.adapters.db.multirow import id_statements, ids_of

ROWS = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": "z"}]


def test_consecutive_ids_come_from_one_statement() -> None:
    [(sql, values)] = id_statements("t", ROWS, consecutive=True)
    assert sql == "INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s), (%s, %s)"
    assert values == (1, "x", 2, "y", 3, "z")
    assert ids_of([40], 3, consecutive=True) == [40, 41, 42]


def test_otherwise_one_statement_and_one_id_per_row() -> None:
    statements = id_statements("t", ROWS, consecutive=False)
    assert [values for _, values in statements] == [(1, "x"), (2, "y"), (3, "z")]
    assert {sql for sql, _ in statements} == {"INSERT INTO t (a, b) VALUES (%s, %s)"}
    assert ids_of([7, 9, 12, 99], 3, consecutive=False) == [7, 9, 12]  # results after them are not theirs


def test_no_rows_no_statements_no_ids() -> None:
    assert id_statements("t", [], consecutive=True) == []
    assert ids_of([], 0, consecutive=True) == []
