"""The outbox holds what is to be published (``adapters.db.outbox``): a row for each event a worker acts on, none for
the events no stream carries (the audit log records those), and each row's id back on its own event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from penpay.adapters.db.outbox import numbered, outbox_rows
from penpay_domain import events as ev

AT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def _event(cls: type[ev.TransactionEvent], txn: str = "T1") -> ev.TransactionEvent:
    return cls(transaction_id=txn, occurred_at=AT, kind="deposit", user_id="u1", from_status=None, to_status="X")


EVENTS = [
    _event(ev.StkPushAccepted),
    _event(ev.DepositPaymentReceived),
    _event(ev.DerivCreditStarted),
    _event(ev.DepositCompleted),
]


def test_rows_only_for_the_events_a_worker_acts_on_carried_ones_written_published() -> None:
    rows = outbox_rows(EVENTS, AT, carried={"deposit.payment_received"})
    assert [(r["event_type"], r["stream"], r["published_at"] is not None) for r in rows] == [
        ("deposit.payment_received", "deriv_transfers", True),
        ("deposit.completed", "notifications", False),
    ]
    assert outbox_rows([_event(ev.StkPushAccepted)], AT) == []


def test_each_row_id_goes_back_to_its_own_event() -> None:
    got = numbered(EVENTS, [41, 42])
    assert [(e.name, e.event_id) for e in got] == [
        ("deposit.stk_push_accepted", None),
        ("deposit.payment_received", 41),
        ("deposit.credit_started", None),
        ("deposit.completed", 42),
    ]
    with pytest.raises(ValueError, match="1 outbox ids for 4 events"):
        numbered(EVENTS, [41])  # a row missing: never an id on the wrong event
