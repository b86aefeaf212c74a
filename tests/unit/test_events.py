"""Domain events: frozen, versioned, and round-tripped through their wire payload; unknown types are refused."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone

import pytest

from penpay_domain import events as ev
from penpay_domain.errors import InvalidInput
from tests.unit.domain_builders import NOW, a_deposit, a_withdrawal


def an_event(cls: type[ev.TransactionEvent], **overrides: object) -> ev.TransactionEvent:
    fields: dict[str, object] = {
        "transaction_id": "01HX5Z0000000000000000000A",
        "occurred_at": datetime(2024, 5, 1, 9, 0, 1, 123456, tzinfo=UTC),
        "kind": "deposit",
        "user_id": "user-1",
        "from_status": "PENDING",
        "to_status": "AWAITING_PAYMENT",
        "detail": "1032",
    }
    fields.update(overrides)
    return cls(**fields)  # type: ignore[arg-type]


class TestEventTypes:
    def test_every_event_type_is_registered_under_its_own_name(self) -> None:
        assert len(ev.EVENT_TYPES) == 18
        for name, cls in ev.EVENT_TYPES.items():
            assert cls.name == name
            assert cls.version >= 1

    def test_names_are_past_tense_facts_scoped_by_kind(self) -> None:
        assert all(name.split(".")[0] in {"deposit", "withdrawal", "transaction"} for name in ev.EVENT_TYPES)

    def test_events_are_immutable(self) -> None:
        event = an_event(ev.DepositRequested)
        with pytest.raises(FrozenInstanceError):
            event.to_status = "COMPLETED"  # type: ignore[misc]

    def test_every_event_the_aggregate_emits_is_registered(self) -> None:
        for txn in (a_deposit(), a_withdrawal()):
            for event in txn.events:
                assert ev.EVENT_TYPES[event.name] is type(event)


class TestPayload:
    @pytest.mark.parametrize("cls", ev.EVENT_TYPES.values(), ids=ev.EVENT_TYPES.keys())
    def test_to_payload_then_event_from_payload_is_the_identity(self, cls: type[ev.TransactionEvent]) -> None:
        event = an_event(cls)
        assert ev.event_from_payload(event.to_payload()) == event

    @pytest.mark.parametrize("cls", ev.EVENT_TYPES.values(), ids=ev.EVENT_TYPES.keys())
    def test_the_payload_survives_json(self, cls: type[ev.TransactionEvent]) -> None:
        event = an_event(cls, from_status=None)
        assert ev.event_from_payload(json.loads(json.dumps(event.to_payload()))) == event

    def test_the_payload_names_type_and_version_and_carries_plain_values(self) -> None:
        payload = an_event(ev.DepositPaymentFailed).to_payload()
        assert payload == {
            "type": "deposit.payment_failed",
            "version": 1,
            "transaction_id": "01HX5Z0000000000000000000A",
            "occurred_at": "2024-05-01T09:00:01.123456+00:00",
            "kind": "deposit",
            "user_id": "user-1",
            "from_status": "PENDING",
            "to_status": "AWAITING_PAYMENT",
            "detail": "1032",
            "event_id": None,
        }

    def test_the_time_keeps_its_offset(self) -> None:
        eat = timezone(timedelta(hours=3))
        event = an_event(ev.DepositCompleted, occurred_at=NOW.astimezone(eat))
        assert ev.event_from_payload(event.to_payload()).occurred_at == NOW

    def test_an_unknown_type_is_refused(self) -> None:
        payload = an_event(ev.DepositRequested).to_payload() | {"type": "deposit.teleported"}
        with pytest.raises(InvalidInput, match=re.escape("unknown event type 'deposit.teleported'")):
            ev.event_from_payload(payload)

    def test_a_missing_type_is_refused(self) -> None:
        payload = an_event(ev.DepositRequested).to_payload()
        del payload["type"]
        with pytest.raises(InvalidInput, match="unknown event type"):
            ev.event_from_payload(payload)

    @pytest.mark.parametrize("version", [2, 0, "1", None])
    def test_an_unknown_version_is_refused(self, version: object) -> None:
        payload = an_event(ev.DepositRequested).to_payload() | {"version": version}
        with pytest.raises(InvalidInput, match="version"):
            ev.event_from_payload(payload)

    @pytest.mark.parametrize("missing", ["transaction_id", "occurred_at", "to_status", "user_id"])
    def test_a_payload_missing_a_field_is_refused(self, missing: str) -> None:
        payload = an_event(ev.DepositRequested).to_payload()
        del payload[missing]
        with pytest.raises(InvalidInput, match=re.escape("malformed deposit.requested")):
            ev.event_from_payload(payload)

    def test_a_malformed_time_is_refused(self) -> None:
        payload = an_event(ev.DepositRequested).to_payload() | {"occurred_at": "yesterday"}
        with pytest.raises(InvalidInput, match="malformed"):
            ev.event_from_payload(payload)

    def test_unknown_extra_fields_are_ignored(self) -> None:
        event = an_event(ev.DepositRequested)
        assert ev.event_from_payload(event.to_payload() | {"added_in_a_later_minor": 1}) == event
