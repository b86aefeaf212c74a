"""Every event goes on a stream exactly when a worker acts on it: the streams are work queues (ARCHITECTURE §5), so a
message no group handles would only be read, deduplicated and acknowledged for nothing, and an event a step waits
for must reach that step's stream."""

from __future__ import annotations

import pytest

from penpay.service_layer.handlers import SUBSCRIPTIONS
from penpay_domain import events as ev

HANDLED = {(sub.stream, name) for sub in SUBSCRIPTIONS.values() for name in sub.steps}


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=list(ev.EVENT_TYPES))
def test_an_event_is_on_a_stream_if_and_only_if_a_worker_acts_on_it(cls: type[ev.TransactionEvent]) -> None:
    handled_on = {stream for stream, name in HANDLED if name == cls.name}
    if cls.is_work():
        assert handled_on == {cls.stream}, f"{cls.name} goes to {cls.stream!r}, handled on {sorted(handled_on)}"
    else:
        assert cls.stream == ev.RECORDED_ONLY
        assert handled_on == set(), f"{cls.name} is recorded only, yet handled on {sorted(handled_on)}"


def test_the_events_no_worker_acts_on_are_the_milestones_and_the_resolution() -> None:
    recorded_only = {name for name, cls in ev.EVENT_TYPES.items() if not cls.is_work()}
    assert recorded_only == {
        "deposit.stk_push_accepted",
        "deposit.credit_started",
        "withdrawal.debit_started",
        "withdrawal.payout_accepted",
        "transaction.resolved",
    }
