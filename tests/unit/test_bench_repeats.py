"""How ``make bench`` turns repeated measurements into one figure: the median deposit burst and the mean of the raw
probes taken before and after the run (pure functions; the harness itself runs in ``tests/e2e/test_bench_smoke``)."""

from __future__ import annotations

from typing import Any

import pytest
from bench.run import combined_probes, figures, median_burst


def burst(rate: float, p99: float = 1000.0) -> dict[str, Any]:
    return {"posted": {"accepted": 1000}, "completion": {"completed_per_s": rate, "completion_ms": {"p99": p99}}}


def probe(commits: float, xadd: float = 20_000.0) -> dict[str, Any]:
    return {
        "commits_per_s": commits,
        "hot_row_commits_per_s": commits / 2,
        "xadd_per_s": xadd,
        "xadd_pipelined_per_s": 3 * xadd,
        "connections": 32,
        "server_version": "10.11",
    }


@pytest.mark.parametrize(
    ("rates", "chosen"),
    [
        ([400.0], 400.0),
        ([380.0, 420.0, 400.0], 400.0),
        ([500.0, 300.0, 410.0], 410.0),
        ([420.0, 380.0], 380.0),  # an even count: the lower middle one, never a figure no burst reached
    ],
)
def test_the_median_burst_is_a_real_burst_with_every_rate_kept(rates: list[float], chosen: float) -> None:
    bursts = [burst(r, p99=r * 2) for r in rates]
    picked = median_burst(bursts)
    assert picked["completion"]["completed_per_s"] == chosen
    assert picked["completion"]["completion_ms"]["p99"] == chosen * 2  # its own completion times, not a mix
    assert picked["repeats"] == rates


def test_the_raw_limit_is_the_mean_of_the_probes_each_kept() -> None:
    before, after = probe(8_000.0, xadd=20_000.0), probe(10_000.0, xadd=22_000.0)
    raw = combined_probes([before, after])
    assert raw["commits_per_s"] == 9_000.0
    assert raw["hot_row_commits_per_s"] == 4_500.0
    assert raw["xadd_per_s"] == 21_000.0
    assert raw["commits_probes"] == [8_000.0, 10_000.0]
    assert raw["probes"] == [before, after]
    assert raw["server_version"] == "10.11"


def test_the_ratio_uses_the_better_worker_count_of_the_medians_against_the_mean_raw_limit() -> None:
    raw = combined_probes([probe(8_000.0), probe(10_000.0)])
    out = {
        "e2e_deposits_1": median_burst([burst(380.0), burst(450.0), burst(400.0)]),
        "e2e_deposits_2": median_burst([burst(390.0), burst(370.0), burst(350.0)]),
    }
    f = figures(raw, out)
    assert f["e2e_deposits_per_s_1_worker"] == 400.0
    assert f["e2e_deposits_repeats_1_worker"] == [380.0, 450.0, 400.0]
    assert f["e2e_deposits_per_s_2_workers"] == 370.0
    assert f["e2e_completed_per_s"] == 400.0
    assert f["raw_commits_per_s"] == 9_000.0
    assert f["raw_commits_probes"] == [8_000.0, 10_000.0]
    assert f["e2e_ratio_to_raw_pct"] == pytest.approx(4.44)
