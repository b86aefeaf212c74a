"""``make bench`` in quick mode: the harness runs end to end against the real processes and writes a results file
with every figure present. No timing is asserted here: the benchmark's figures are read by people, not by tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import figures

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_benchmark_writes_every_figure(tmp_path: Path, database_url: str, redis_url: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PENPAY_", "BENCH_"))},
        "PENPAY_DATABASE_URL": database_url,
        "PENPAY_REDIS_URL": redis_url,
        "PENPAY_E2E_LOGS": str(tmp_path / "logs"),
        "BENCH_QUICK": "1",
        "BENCH_RESULTS_DIR": str(tmp_path / "results"),
        "BENCH_LOGS_DIR": str(tmp_path / "logs"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    written = list((tmp_path / "results").glob("*.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    expected = set(figures(results["raw"], {}))
    missing = sorted(name for name in expected if results["figures"].get(name) is None)
    assert missing == []
    assert results["figures"]["ledger_ok"] is True
    assert results["figures"]["all_terminal"] is True
    assert set(results["targets"]) == {
        "api_accepted_per_s",
        "api_p99_ms_at_500",
        "e2e_completed_per_s",
        "e2e_ratio_to_raw_pct",
    }
    assert "ledger balances: ok" in run.stdout
