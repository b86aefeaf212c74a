"""A gateway record's text: the swap script compares a stored record with ``Record.encode()``, so the hand-built
encoding must stay exactly what ``json.dumps(dataclasses.asdict(record), sort_keys=True)`` writes, and decode back."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from penpay.gateway.records import MoneyCall, MoneyResult, Outcome, Record, State

calls = st.builds(
    MoneyCall,
    kind=st.sampled_from(["transfer", "withdraw"]),
    loginid=st.text(max_size=12),
    amount_cents=st.integers(min_value=0, max_value=10**12),
    currency=st.sampled_from(["USD", "EUR"]),
)
results = st.builds(
    MoneyResult,
    outcome=st.sampled_from(list(Outcome)),
    transaction_id=st.integers(min_value=0, max_value=2**53),
    error_code=st.text(max_size=20),
    error_message=st.text(max_size=60),
    client_full_name=st.text(max_size=30),
    refused_by=st.sampled_from(["", "authorize", "paymentagent_withdraw"]),
)
records = st.builds(
    Record,
    call=calls,
    state=st.sampled_from(list(State)),
    started_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    fencing_token=st.integers(min_value=0, max_value=2**53),
    attempt=st.integers(min_value=1, max_value=100),
    result=st.none() | results,
)


@given(records)
def test_the_encoding_is_the_canonical_json_of_every_field_and_decodes_back(record: Record) -> None:
    fields = dataclasses.asdict(record)
    if fields["result"] is not None and not fields["result"]["refused_by"]:
        del fields["result"]["refused_by"]  # written only when it names a call (older gateways read the rest)
    assert record.encode() == json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert Record.decode(record.encode()) == record


def test_a_known_record_byte_for_byte() -> None:
    record = Record(
        call=MoneyCall(kind="transfer", loginid="CR1000001", amount_cents=76, currency="USD"),
        state=State.FINAL,
        started_at=1796172705.5,
        fencing_token=3,
        result=MoneyResult(outcome=Outcome.DONE, transaction_id=1001, client_full_name="Wanjiru K."),
    )
    assert record.encode() == (
        '{"attempt":1,"call":{"amount_cents":76,"currency":"USD","kind":"transfer","loginid":"CR1000001"},'
        '"fencing_token":3,"result":{"client_full_name":"Wanjiru K.","error_code":"","error_message":"",'
        '"outcome":"done","transaction_id":1001},"started_at":1796172705.5,"state":"final"}'
    )


def test_a_record_written_before_refused_by_existed_decodes_with_none_named() -> None:
    stored = (
        '{"attempt":1,"call":{"amount_cents":500,"currency":"USD","kind":"withdraw","loginid":"CR1000001"},'
        '"fencing_token":3,"result":{"client_full_name":"","error_code":"InvalidToken","error_message":"Your token '
        'has expired or is invalid.","outcome":"rejected","transaction_id":0},"started_at":1796172705.5,'
        '"state":"final"}'
    )
    result = Record.decode(stored).result
    assert result is not None and (result.error_code, result.refused_by) == ("InvalidToken", "")


def test_a_result_field_from_a_newer_gateway_is_left_out_after_a_rollback() -> None:
    stored = json.loads(
        Record.decode(
            '{"attempt":1,"call":{"amount_cents":500,"currency":"USD","kind":"withdraw","loginid":"CR1000001"},'
            '"fencing_token":3,"result":{"client_full_name":"","error_code":"","error_message":"","outcome":"done",'
            '"refused_by":"","transaction_id":77},"started_at":1796172705.5,"state":"final"}'
        ).encode()
    )
    stored["result"]["settled_by"] = "statement"  # a field this code does not know
    result = Record.decode(json.dumps(stored)).result
    assert result is not None and (result.outcome, result.transaction_id) == (Outcome.DONE, 77)


def test_refused_by_is_written_only_for_a_refusal() -> None:
    call = MoneyCall(kind="withdraw", loginid="CR1000001", amount_cents=500, currency="USD")
    done = MoneyResult(outcome=Outcome.DONE, transaction_id=1)
    refused = MoneyResult(
        outcome=Outcome.REJECTED, error_code="InvalidToken", error_message="x", refused_by="paymentagent_withdraw"
    )
    for result, written in ((done, False), (refused, True)):
        record = Record(call=call, state=State.FINAL, started_at=1.0, fencing_token=1, result=result)
        assert ('"refused_by"' in record.encode()) is written
        assert Record.decode(record.encode()) == record
