"""Values for an ``IN (…)`` list, in as few statement shapes as possible: :func:`padded`.

The worker's statements run as server-side prepared statements (``engine.create_engine``), cached per connection by
their text. An expanding ``IN`` has one placeholder per value, so a list of any new length is a new statement: one
more round trip to prepare it (whose answer describes every placeholder), run once, and evicted later. Under load
the batches' lengths vary from 1 to hundreds, and more than half of the worker's statements were prepared first.
Padding each list to the next power of two, the last value repeated, leaves about ten lengths per statement, which
stay prepared. A repeated value changes nothing an ``IN`` selects, updates or locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def padded(values: Iterable[T]) -> list[T]:
    """``values`` as a list whose length is a power of two (an empty one stays empty), the last value repeated."""
    out = list(values)
    if out:
        out.extend([out[-1]] * ((1 << (len(out) - 1).bit_length()) - len(out)))
    return out
