"""``python -m bench.probe``: the raw-limit probe alone, as ``make bench`` runs it, printed as JSON."""

from __future__ import annotations

import json

import pytest
from bench import probe

pytestmark = pytest.mark.integration


def test_the_probe_alone_prints_every_limit(
    service_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PENPAY_DATABASE_URL", service_urls[0])
    monkeypatch.setenv("PENPAY_REDIS_URL", service_urls[1])
    assert probe.main(["--seconds", "0.3", "--connections", "2", "--redis-seconds", "0.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    for rate in ("commits_per_s", "hot_row_commits_per_s", "xadd_per_s", "xadd_pipelined_per_s"):
        assert out[rate] > 0, rate
    assert out["connections"] == 2 and out["server_version"]
    cost = out["round_trip_cpu_us"]  # the client's CPU a round trip, back to back and after idle
    assert cost["client_back_to_back"] > 0 and cost["client_after_idle"] > 0
    assert cost["client_wake_factor"] == pytest.approx(
        cost["client_after_idle"] / cost["client_back_to_back"], abs=0.05
    )


def test_an_unreachable_redis_is_one_line_and_exit_1(
    service_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PENPAY_DATABASE_URL", service_urls[0])
    monkeypatch.setenv("PENPAY_REDIS_URL", "redis://127.0.0.1:1/0")
    assert probe.main(["--seconds", "0.2", "--connections", "1", "--redis-seconds", "0.1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bench.probe: cannot measure (") and captured.err.count("\n") == 1
