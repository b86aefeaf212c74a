"""The raw probe's CPU per MariaDB round trip, back to back and after idle, as ``make bench`` reports it: what this
machine charges a process for waking up (pure functions; the probe itself runs in
``tests/integration/test_bench_probe``)."""

from __future__ import annotations

from typing import Any

from bench.probe import RoundTripCost, local_server_pid
from bench.run import figures, round_trip_rows

RAW: dict[str, Any] = {
    "commits_per_s": 8_000.0,
    "hot_row_commits_per_s": 3_000.0,
    "xadd_per_s": 1.0,
    "xadd_pipelined_per_s": 1.0,
}


def test_the_wake_factor_is_the_client_cost_after_idle_over_back_to_back() -> None:
    cost = RoundTripCost(
        client_back_to_back=100.0, client_after_idle=250.0, server_back_to_back=None, server_after_idle=None
    )
    assert cost.wake_factor == 2.5
    assert cost.as_dict() == {
        "client_back_to_back": 100.0,
        "client_after_idle": 250.0,
        "server_back_to_back": None,
        "server_after_idle": None,
        "client_wake_factor": 2.5,
        "idle_pause_ms": 20.0,
    }


def test_the_figures_carry_the_round_trip_cost_and_the_table_prints_it() -> None:
    cost = RoundTripCost(97.0, 247.0, 60.0, 150.0).as_dict()
    f = figures({**RAW, "round_trip_cpu_us": cost}, {})
    assert f["raw_round_trip_cpu_us"] == cost
    rows = round_trip_rows(f["raw_round_trip_cpu_us"])
    assert [(name, value) for name, value, _ in rows] == [
        ("raw: CPU us a MariaDB round trip, client", 97.0),
        ("raw: same, client, after idle", 247.0),
        ("raw: same, server", 60.0),
    ]
    assert rows[1][2] == "after 20.0 ms idle: 2.5x"
    assert rows[2][2] == "back to back; after 20.0 ms idle: 150.0"


def test_a_remote_server_has_no_server_row_and_an_older_result_no_rows() -> None:
    remote = RoundTripCost(97.0, 247.0, None, None).as_dict()
    assert [name for name, _, _ in round_trip_rows(remote)] == [
        "raw: CPU us a MariaDB round trip, client",
        "raw: same, client, after idle",
    ]
    assert round_trip_rows(figures(RAW, {})["raw_round_trip_cpu_us"]) == []


def test_the_servers_cpu_is_read_only_for_a_database_on_this_machine() -> None:
    assert local_server_pid("mysql+asyncmy://root@db.example.test:3306/penpay") is None  # another machine's server
