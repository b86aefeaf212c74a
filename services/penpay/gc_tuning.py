"""The garbage collector's settings for PenPay's long-running processes (API, worker, gateway, sandbox).

CPython's cyclic collector runs a young collection every 700 net allocations of container objects, and a full one
after every ten of the next generation's: each full collection walks every object alive, which in these processes is
mostly what startup made (modules, SQLAlchemy's and pydantic's compiled machinery, protobuf descriptors). Under load
that was about a tenth of a worker's CPU, in pauses of ~50 ms (docs/performance.md, round 5).

:func:`settle_heap`, called once by each process after its start-up imports, moves everything alive then into the
permanent generation (``gc.freeze``: never scanned again) and makes young collections rarer. Reference counting
still frees almost everything at once; only garbage with cycles waits a little longer.
"""

from __future__ import annotations

import gc

# net allocations of container objects between young collections (CPython's default: 700)
YOUNG_THRESHOLD = 20_000
# young collections per middle one, and middle ones per full one (CPython's: 10 and 10)
OLDER_THRESHOLDS = (20, 20)


def settle_heap() -> None:
    """Collect once, freeze what survives, and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
