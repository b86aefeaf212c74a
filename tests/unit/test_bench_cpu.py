"""``make bench``'s CPU meter: each process's CPU per completed deposit, how busy the cores were, and what they
carry at full use (read from /proc of real processes; nothing timed is asserted beyond "some CPU was used")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.profiling import CpuMeter, context_switches, penpay_pids


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


def test_a_process_that_exits_before_the_reading_is_left_out_of_the_switches_too() -> None:
    short = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()"], stdin=subprocess.PIPE)
    assert short.stdin is not None
    try:
        meter = CpuMeter({"short": short.pid})
        short.stdin.write(b"go\n")
        short.stdin.close()
        short.wait(timeout=30)

        cpu = meter.per_unit(10)
    finally:
        short.kill()

    assert context_switches(short.pid) is None
    assert "short" not in cpu["switches_each"]
    assert "short" not in cpu["ms_each"]
    assert "load generator" in cpu["switches_each"]  # the bench's own process, as for the CPU


def test_a_sleeping_process_counts_a_voluntary_switch_for_each_sleep() -> None:
    sleeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nsys.stdin.readline()\nfor _ in range(200): time.sleep(0.001)\nsys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert sleeper.stdin is not None
    try:
        before = context_switches(sleeper.pid)
        assert before is not None  # alive, though perhaps not switched yet: (0, 0) is a live process's count too
        meter = CpuMeter({"sleeper": sleeper.pid})
        sleeper.stdin.write(b"go\n")
        sleeper.stdin.flush()
        deadline = time.monotonic() + 30
        while (now := context_switches(sleeper.pid)) is not None and now[0] < before[0] + 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)

        cpu = meter.per_unit(10)
    finally:
        sleeper.kill()
        sleeper.wait()

    assert cpu["switches_each"]["sleeper"]["voluntary"] >= 20  # 200 sleeps over 10 deposits
    assert cpu["switches_total_each"]["voluntary"] >= cpu["switches_each"]["sleeper"]["voluntary"]
    assert cpu["switches_each"]["sleeper"]["preempted"] >= 0
