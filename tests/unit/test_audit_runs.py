"""The chainer's runs of consecutive ids (``adapters.db.audit.runs``): what its range deletes are built from."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters.db.audit import runs


def test_runs_of_consecutive_ids() -> None:
    assert runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert runs([]) == []
    assert runs([5]) == [(5, 5)]


@given(st.sets(st.integers(min_value=1, max_value=500)))
def test_runs_cover_exactly_the_ids(ids: set[int]) -> None:
    found = runs(sorted(ids))
    covered = [i for first, last in found for i in range(first, last + 1)]
    assert covered == sorted(ids)  # every id once, nothing else: a range delete touches only chained rows
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(found))  # runs are maximal
