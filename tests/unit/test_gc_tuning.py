"""``gc_tuning.settle_heap``: what each long-running process does to its collector after start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from penpay import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_settling_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    survivor = [object() for _ in range(10)]
    gc.unfreeze()
    gc_tuning.settle_heap()
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, *gc_tuning.OLDER_THRESHOLDS)
    assert gc.get_freeze_count() > len(survivor)
    assert gc.is_tracked(survivor)


@pytest.mark.usefixtures("restored")
def test_cycles_made_after_settling_are_still_collected() -> None:
    gc_tuning.settle_heap()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
