"""``penpay-worker --workers``: types and the groups of them that the Procfile and the deployment run."""

from __future__ import annotations

import pytest

from penpay.worker.main import GROUPS, SWEEPS, WORKER_TYPES, parse_workers
from tests.e2e.platform import procfile


def test_steps_and_sweeps_are_every_type_once() -> None:
    assert sorted(parse_workers("steps") + parse_workers("sweeps")) == sorted(WORKER_TYPES)
    assert parse_workers("sweeps") == list(SWEEPS) == ["relay", "reconciler", "auditor"]
    assert "auditor" not in parse_workers("steps") and "callbacks" in parse_workers("steps")


@pytest.mark.parametrize("text", ["", "all", " all ", "steps,sweeps", "sweeps,steps,deposit"])
def test_all_of_them(text: str) -> None:
    assert sorted(parse_workers(text)) == sorted(WORKER_TYPES)


def test_types_and_groups_mix_and_nothing_is_run_twice() -> None:
    assert parse_workers("deposit,steps") == ["deposit", *[t for t in GROUPS["steps"] if t != "deposit"]]
    assert parse_workers("auditor,auditor") == ["auditor"]


def test_an_unknown_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown worker type\(s\) sweep; choose from .* or the groups all, steps"):
        parse_workers("sweep")


def test_make_run_runs_every_type_in_one_worker_process() -> None:
    commands = procfile()
    assert commands["worker"] == ("penpay-worker", "--workers", "all")
    assert not [name for name, argv in commands.items() if argv[0] == "penpay-worker" and name != "worker"]
