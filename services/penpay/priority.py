"""A background process's share of the CPU: below the processes that answer users and move money.

The sweeper (``penpay-worker --workers sweeps``: the outbox relay, the reconciler, the audit chainer) does work no
one waits for from one moment to the next, and on a machine it shares with the API and the worker its passes took
their CPU share from them (docs/performance.md, round 9). :func:`yield_to_foreground` lowers its priority.

Linux's autogroup scheduling (on by default on most distributions, ``/proc/sys/kernel/sched_autogroup_enabled``)
shares the CPU between sessions before processes, and honcho, the e2e platform and containers start each PenPay
process as the leader of its own session, so ``nice`` alone changes nothing against the others: a session leader
also lowers its session's weight (``/proc/self/autogroup``, which concerns only its own session). Where there is no
autogroup, ``nice`` is what counts. Raising a nice value needs no privilege; a failure is ignored (the process then
runs as before).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# nice 5 weighs a third of a nice-0 process: against the five busy ones of a saturated two-core machine that is
# ~12 % of a core, about what the sweeps need at 250 deposits/s (~0.4 ms each), so they keep up under sustained load
# instead of falling behind until it ends (the API's phases were measured with the sweeper at nice 10, a tenth:
# about as with one worker process; docs/performance.md, round 9)
BACKGROUND_NICE = 5
AUTOGROUP = Path("/proc/self/autogroup")


def yield_to_foreground(nice: int = BACKGROUND_NICE) -> int:
    """Lower this process's CPU priority by ``nice``; returns its nice value afterwards."""
    with contextlib.suppress(OSError):
        os.nice(nice)
    if os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):
            AUTOGROUP.write_text(str(nice))
    return os.nice(0)
