"""``make bench``'s latency curve (the API's latency beside the worker at lower offered rates) as figures, and the
``BENCH_*`` knobs refused with one readable message (pure functions; the harness runs in
``tests/e2e/test_bench_smoke``)."""

from __future__ import annotations

from typing import Any

import pytest
from bench.config import BenchConfig, ConfigError
from bench.run import best_rate_within, figures


def point(rate: float, p50: float, p99: float, *, sent: int = 800, accepted: int = 800) -> dict[str, Any]:
    """One rate of the curve as the harness records it."""
    return {
        "rate": rate,
        "api": {"sent": sent, "accepted": accepted, "latency_ms": {"p50": p50}, "p99_with_failures_ms": p99},
        "completion": {"completion_ms": {"p99": 300.0}},
        "cpu": {"total_ms_each": 9.5, "cores_busy": 1.1, "switches_total_each": {"voluntary": 21.5, "preempted": 4.0}},
    }


RAW = {"commits_per_s": 8_000.0, "hot_row_commits_per_s": 3_000.0, "xadd_per_s": 1.0, "xadd_pipelined_per_s": 1.0}


def test_each_rate_is_a_figure_and_the_best_rate_is_the_highest_within_the_goal() -> None:
    out = {
        "api_curve": [point(100, 6.0, 14.0), point(200, 9.0, 24.9), point(300, 30.0, 80.0)],
        "api_latency": {"sent": 5000, "accepted": 5000, "latency_ms": {"p50": 90.0}, "p99_with_failures_ms": 300.0},
        "config": {"latency_rate": 500.0},
    }
    f = figures(RAW, out)
    assert [(pt["rate"], pt["p50_ms"], pt["p99_ms"], pt["failed"]) for pt in f["api_curve"]] == [
        (100, 6.0, 14.0, 0),
        (200, 9.0, 24.9, 0),
        (300, 30.0, 80.0, 0),
    ]
    assert f["api_curve"][0]["cpu_ms_per_deposit"] == 9.5
    assert f["api_curve"][0]["switches_per_deposit"] == 21.5
    assert f["api_curve"][0]["completion_p99_ms"] == 300.0
    assert f["api_best_rate_within_p99_goal"] == 200.0


def test_the_fixed_rate_counts_when_it_meets_the_goal_too() -> None:
    out = {
        "api_curve": [point(100, 5.0, 12.0)],
        "api_latency": {"sent": 5000, "accepted": 5000, "latency_ms": {"p50": 9.0}, "p99_with_failures_ms": 21.0},
        "config": {"latency_rate": 500.0},
    }
    assert figures(RAW, out)["api_best_rate_within_p99_goal"] == 500.0


@pytest.mark.parametrize(
    ("points", "best"),
    [
        ([], 0.0),
        ([{"rate": 100.0, "p99_ms": 40.0, "failed": 0}], 0.0),  # none within: 0, said "none" in the table
        ([{"rate": 100.0, "p99_ms": 10.0, "failed": 3}], 0.0),  # a rate with failed requests never counts
        ([{"rate": 100.0, "p99_ms": 10.0, "failed": 0}, {"rate": 300.0, "p99_ms": 25.0, "failed": 0}], 300.0),
        ([{"rate": 100.0, "p99_ms": 10.0, "failed": 0}, {"rate": None, "p99_ms": None, "failed": None}], 100.0),
    ],
)
def test_best_rate_within(points: list[dict[str, Any]], best: float) -> None:
    assert best_rate_within(points, 25.0) == best


def test_the_curve_rates_are_read_in_order() -> None:
    assert BenchConfig.from_env({"BENCH_CURVE_RATES": "50, 150,250"}).curve() == (50.0, 150.0, 250.0)
    assert BenchConfig.from_env({}).curve() == (100.0, 200.0, 300.0, 400.0)
    assert BenchConfig.from_env({"BENCH_QUICK": "1"}).curve() == (20.0,)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BENCH_CURVE_RATES": "100,fast"}, "BENCH_CURVE_RATES must be offered rates in req/s"),
        ({"BENCH_CURVE_RATES": "0"}, "BENCH_CURVE_RATES must be offered rates in req/s"),
        ({"BENCH_CURVE_RATES": " , "}, "BENCH_CURVE_RATES must be offered rates in req/s"),
        ({"BENCH_E2E_DEPOSITS": "many"}, "BENCH_E2E_DEPOSITS must be an integer, not 'many'"),
        ({"BENCH_CURVE_SECONDS": "long"}, "BENCH_CURVE_SECONDS must be a number, not 'long'"),
    ],
)
def test_a_knob_that_cannot_be_used_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchConfig.from_env(env)


def test_the_fixed_rate_counts_the_apis_own_refusals_and_the_generators_lateness() -> None:
    lat = {
        "sent": 5000,
        "accepted": 4970,
        "statuses": {"202": 4970, "503": 25},  # and 5 with no answer in time
        "latency_ms": {"p50": 900.0},
        "p99_with_failures_ms": 5000.0,
        "lag_p99_ms": 120.5,
    }
    f = figures(RAW, {"api_latency": lat, "config": {"latency_rate": 500.0}})
    assert (f["api_failed_at_500"], f["api_refused_at_500"]) == (30, 25)
    assert f["api_generator_lag_p99_ms_at_500"] == 120.5  # the generator's own lateness, beside the latency
    assert figures(RAW, {})["api_refused_at_500"] is None
