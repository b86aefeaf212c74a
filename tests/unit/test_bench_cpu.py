"""``make bench``'s CPU meter: each process's CPU per completed deposit, how busy the cores were, and what they
carry at full use (read from /proc of real processes; nothing timed is asserted beyond "some CPU was used")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.profiling import CpuMeter, penpay_pids


def _burn(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_each_process_is_charged_per_completed_deposit_and_the_sum_says_how_busy_the_cores_were() -> None:
    meter = CpuMeter({"this process": os.getpid()})
    _burn(0.3)

    cpu = meter.per_unit(10, span_s=0.5)

    by_process = cpu["ms_each"]
    assert set(by_process) == {"this process", "load generator"}  # the bench's own process is the load generator
    assert by_process["this process"] >= 20  # 0.3 s over 10 deposits, give or take the clock's ticks
    assert cpu["total_ms_each"] == pytest.approx(sum(by_process.values()), abs=0.01)
    total_s = cpu["total_ms_each"] * 10 / 1000
    assert cpu["cores_busy"] == pytest.approx(total_s / 0.5, abs=0.01)
    assert cpu["full_use_per_s"] == pytest.approx(cpu["cores"] * 10 / total_s, rel=0.01)


def test_a_process_that_is_gone_is_left_out_and_nothing_completed_carries_no_rate() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    meter = CpuMeter({"gone": int(gone.stdout), "this process": os.getpid()})

    cpu = meter.per_unit(0)

    assert "gone" not in cpu["ms_each"]
    assert cpu["full_use_per_s"] is None


def test_a_running_platforms_processes_are_found_by_their_console_scripts(tmp_path: Path) -> None:
    script = tmp_path / "penpay-worker"  # as `make run` starts it: the venv's python running the console script
    script.write_text("import time\ntime.sleep(30)\n")
    other = tmp_path / "not-penpay"
    other.write_text("import time\ntime.sleep(30)\n")
    worker = subprocess.Popen([sys.executable, str(script), "--workers", "all"])
    unrelated = subprocess.Popen([sys.executable, str(other)])
    try:
        deadline = time.monotonic() + 10
        while worker.pid not in penpay_pids().values() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = penpay_pids()
        assert worker.pid in found.values()
        assert next(name for name, pid in found.items() if pid == worker.pid).startswith("worker")
        assert unrelated.pid not in found.values()
    finally:
        worker.kill()
        unrelated.kill()
        worker.wait()
        unrelated.wait()
