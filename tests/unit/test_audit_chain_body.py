"""The chained row's canonical JSON (``adapters.db.audit.chain_body``), written directly, is byte for byte what the
canonical encoding of its fields' dict gives: every hash already in a chain must still verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters.db.audit import canonical, chain_body


def _as_dict(*, seq: int, occurred_at: datetime, actor: str, action: str, subject: str, payload_json: str) -> str:
    return canonical(
        {
            "seq": seq,
            "occurred_at": occurred_at.isoformat(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "payload": payload_json,
        }
    )


@given(
    seq=st.integers(min_value=-(2**70), max_value=2**70),
    occurred_at=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=3))]) | st.none()),
    actor=st.text(),
    action=st.text(),
    subject=st.text(),
    payload_json=st.text(),
)
def test_the_direct_body_is_the_canonical_json_of_the_fields(
    seq: int, occurred_at: datetime, actor: str, action: str, subject: str, payload_json: str
) -> None:
    fields = {"seq": seq, "occurred_at": occurred_at, "actor": actor, "action": action, "subject": subject}
    assert chain_body(**fields, payload_json=payload_json) == _as_dict(**fields, payload_json=payload_json)


def test_a_real_row_and_its_known_body() -> None:
    body = chain_body(
        seq=7,
        occurred_at=datetime(2026, 12, 1, 9, 30, 0, 5, tzinfo=UTC),
        actor="worker",
        action="deposit.completed",
        subject="T-1",
        payload_json='{"amount":"ü\\n"}',
    )
    assert body == (
        '{"action":"deposit.completed","actor":"worker","occurred_at":"2026-12-01T09:30:00.000005+00:00",'
        '"payload":"{\\"amount\\":\\"ü\\\\n\\"}","seq":7,"subject":"T-1"}'
    )


def test_a_seq_that_is_not_a_plain_int_is_refused() -> None:
    with pytest.raises(TypeError, match="seq must be an int"):
        chain_body(
            seq=True, occurred_at=datetime(2026, 1, 1, tzinfo=UTC), actor="", action="", subject="", payload_json=""
        )
