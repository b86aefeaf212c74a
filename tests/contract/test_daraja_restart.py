"""Daraja's side of the sandbox across a restart (``PENPAY_SANDBOX_STATE_DIR``): a simulator that replays the
journal of an earlier one answers for its STK sessions and payouts, and delivers the callbacks and results that the
earlier one had not sent when it stopped, so a platform restarted mid-deposit completes it as Safaricom would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from penpay.sandbox.daraja import DarajaSimulator
from penpay.sandbox.journal import Journal, JournalError
from tests.contract.daraja_fixtures import CallbackReceiver, callback_receiver, running_daraja
from tests.contract.test_daraja_simulator import (
    B2C,
    QUERY,
    STATUS,
    STK,
    b2c_body,
    get_token,
    post,
    query_body,
    status_body,
    stk_body,
)

pytestmark = pytest.mark.contract

LATER_MS = 60_000  # the first simulator stops long before it would have called back


def _items(delivery_json: Any) -> dict[str, Any]:
    metadata = delivery_json["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    return {i["Name"]: i.get("Value") for i in metadata}


def _journaled(sim: DarajaSimulator, path: Path) -> Journal:
    """``sim`` with the journal at ``path`` replayed onto it and its every change recorded there."""
    journal = Journal(path)
    journal.open(sim.replay)
    sim.recorder = journal.append
    return journal


@contextlib.asynccontextmanager
async def _restarted(path: Path, *, owed: int) -> AsyncIterator[Any]:
    """A new simulator on the journal at ``path``: it replays it, finds ``owed`` callbacks or results still owed (and
    starts delivering them), and records to it until it is idle at the end of the block."""
    async with running_daraja(callback_delay_ms=0) as daraja:
        journal = _journaled(daraja.sim, path)
        assert daraja.sim.resume() == owed
        yield daraja
        await daraja.sim.wait_idle()  # a delivery still running records its outcome: the journal stays open for it
        journal.close()


async def _stopped_with_owed(path: Path, receiver: CallbackReceiver, requests: Any) -> list[dict[str, Any]]:
    """Run a simulator that journals to ``path``, make ``requests`` of it, and stop it before it calls back."""
    async with running_daraja(callback_delay_ms=LATER_MS) as first:
        journal = _journaled(first.sim, path)
        async with first.client() as http:
            answers = await requests(first, http, await get_token(http))
        journal.close()
    assert receiver.deliveries == []  # stopped first: nothing was delivered
    return list(answers)


class TestAcrossARestart:
    async def test_an_stk_callback_owed_is_delivered_and_the_query_answers_for_the_session(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "daraja.jsonl"
        async with callback_receiver() as receiver:

            async def push(_: Any, http: Any, token: str) -> list[dict[str, Any]]:
                return [(await post(http, STK, token, stk_body(receiver, Amount=250))).json()]

            [accepted] = await _stopped_with_owed(path, receiver, push)
            async with _restarted(path, owed=1) as second:
                [delivery] = await receiver.wait_for("/hooks/stk")
                callback = delivery.json()["Body"]["stkCallback"]
                assert callback["CheckoutRequestID"] == accepted["CheckoutRequestID"]
                assert callback["ResultCode"] == 0 and _items(delivery.json())["Amount"] == 250
                async with second.client() as http:
                    token = await get_token(http)
                    answer = (await post(http, QUERY, token, query_body(accepted["CheckoutRequestID"]))).json()
                assert (answer["ResultCode"], answer["CheckoutRequestID"]) == ("0", accepted["CheckoutRequestID"])

            # a third start owes nothing, and the session's receipt is the one delivered
            async with _restarted(path, owed=0) as third:
                async with third.client() as http:
                    token = await get_token(http)
                    receipt = _items(delivery.json())["MpesaReceiptNumber"]
                    await post(http, STATUS, token, status_body(third, receiver, TransactionID=receipt))
                [status] = await receiver.wait_for("/hooks/status/result")
                assert status.json()["Result"]["ResultCode"] == 0
                assert status.json()["Result"]["TransactionID"] == receipt

    async def test_a_payout_result_owed_is_delivered_and_transaction_status_finds_the_payout(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "daraja.jsonl"
        async with callback_receiver() as receiver:

            async def pay(first: Any, http: Any, token: str) -> list[dict[str, Any]]:
                body = b2c_body(first, receiver, OriginatorConversationID="PPR0001", Amount=700)
                return [(await post(http, B2C, token, body)).json()]

            [accepted] = await _stopped_with_owed(path, receiver, pay)
            async with _restarted(path, owed=1) as second:
                [result] = await receiver.wait_for("/hooks/b2c/result")
                assert result.json()["Result"]["ConversationID"] == accepted["ConversationID"]
                assert result.json()["Result"]["ResultCode"] == 0
                async with second.client() as http:
                    token = await get_token(http)
                    again = await post(http, B2C, token, b2c_body(second, receiver, OriginatorConversationID="PPR0001"))
                    assert again.status_code != 200  # the payout is known: a duplicate, as before the restart
                    await post(http, STATUS, token, status_body(second, receiver, OriginalConversationID="PPR0001"))
                [status] = await receiver.wait_for("/hooks/status/result")
                params = {p["Key"]: p["Value"] for p in status.json()["Result"]["ResultParameters"]["ResultParameter"]}
                assert (params["TransactionStatus"], params["Amount"]) == ("Completed", "700")

            async with _restarted(path, owed=0):  # the result was delivered: nothing owed
                pass

    async def test_an_unknown_change_stops_the_replay_naming_the_line(self, tmp_path: Path) -> None:
        path = tmp_path / "daraja.jsonl"
        path.write_text(json.dumps({"op": "teleport"}) + "\n")
        async with running_daraja() as daraja:
            with pytest.raises(JournalError, match=r"daraja.jsonl:1: .*teleport.*delete the file"):
                Journal(path).open(daraja.sim.replay)
