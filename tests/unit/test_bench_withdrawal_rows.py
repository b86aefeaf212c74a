"""``make bench``'s table for the withdrawal burst: each process's CPU and the context switches a completed
withdrawal, as it prints them for the deposit burst (pure functions over a results dict)."""

from __future__ import annotations

from typing import Any

from bench import report
from bench.run import figures, render

RAW: dict[str, Any] = {
    "commits_per_s": 8_000.0,
    "hot_row_commits_per_s": 3_000.0,
    "xadd_per_s": 1.0,
    "xadd_pipelined_per_s": 1.0,
}
MACHINE = {"cores": 2, "cpu": "test", "memory_mb": 1, "mariadb": "x", "redis": "y", "python": "3.11"}


def _withdrawals(cpu: dict[str, Any]) -> dict[str, Any]:
    return {"e2e_withdrawals": {"completion": {"completed_per_s": 300.0, "completion_ms": {}}, "cpu": cpu}}


def _table(f: dict[str, Any]) -> str:
    return render({**f, "api_offered_rate": 500.0}, report.evaluate(f), MACHINE)  # the rest of a run left out


def test_the_withdrawal_burst_prints_each_process_and_the_context_switches_a_withdrawal() -> None:
    cpu = {
        "total_ms_each": 5.3,
        "cores_busy": 1.7,
        "ms_each": {"worker": 1.7, "gateway": 0.7, "redis-server": 0.01},
        "switches_total_each": {"voluntary": 7.8, "preempted": 4.6},
    }
    f = figures(RAW, _withdrawals(cpu))
    assert f["e2e_withdrawal_cpu_ms_by_process"] == cpu["ms_each"]
    assert f["e2e_withdrawal_switches"] == {"voluntary": 7.8, "preempted": 4.6}

    rows = _table(f).splitlines()
    first = next(n for n, row in enumerate(rows) if "CPU ms per completed withdrawal" in row)
    assert "of which worker" in rows[first + 1] and "1.7" in rows[first + 1]
    assert "of which gateway" in rows[first + 2]
    assert not any("of which redis-server" in row for row in rows[first:])  # below what the table shows
    switches = next(row for row in rows if "context switches a completed withdrawal" in row)
    assert "7.8" in switches and "4.6 preempted" in switches


def test_a_withdrawal_burst_without_a_meter_prints_no_process_rows() -> None:
    f = figures(RAW, _withdrawals({}))
    assert f["e2e_withdrawal_cpu_ms_by_process"] is None
    assert "context switches a completed withdrawal" in _table(f)  # the row, with nothing measured in it
