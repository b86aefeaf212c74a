"""``in_lists.padded``: a list's length rounded up to a power of two with its last value, order kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters.db.in_lists import padded


def test_lengths_are_powers_of_two_with_the_last_value_repeated() -> None:
    assert padded([]) == []
    assert padded(["a"]) == ["a"]
    assert padded(["a", "b", "c"]) == ["a", "b", "c", "c"]
    assert padded(range(5)) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert padded(dict.fromkeys("xy")) == ["x", "y"]


@given(st.lists(st.integers(), max_size=600))
def test_the_values_and_their_order_are_kept(values: list[int]) -> None:
    out = padded(values)
    assert out[: len(values)] == values and set(out) == set(values)
    assert len(out) == 0 or (len(out) & (len(out) - 1) == 0 and len(out) < 2 * len(values))
