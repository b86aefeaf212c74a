"""A background process lowers its CPU priority: its nice value, and its session's autogroup where it leads one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = "from penpay.priority import yield_to_foreground; print(yield_to_foreground(7))"


def _run(*, new_session: bool) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{SCRIPT}; print(open('/proc/self/autogroup').read().strip())"],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=new_session,
        timeout=30,
    ).stdout.split("\n")
    return int(out[0]), out[1]


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling on this kernel")
def test_a_session_leader_lowers_its_nice_value_and_its_sessions_weight() -> None:
    nice, autogroup = _run(new_session=True)
    assert nice == 7
    assert autogroup.endswith("nice 7")


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling on this kernel")
def test_a_process_in_someone_elses_session_leaves_that_session_alone() -> None:
    before = Path("/proc/self/autogroup").read_text().strip()
    nice, autogroup = _run(new_session=False)
    assert nice >= 7  # its own nice value, on top of pytest's
    assert autogroup == before  # the session it shares (pytest's) keeps its weight
