"""Worker steps over batches of messages (``Subscription.batched``, ``callback_handler``), on the real database.

Messages in flight together share their units of work; each still succeeds or fails on its own, a batch that fails
as a whole is run again one message at a time, and two messages of one transaction never share a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from penpay.adapters.db.repositories import transaction_row
from penpay.adapters.db.tables import outbox
from penpay.adapters.mailer import MailNotSent
from penpay.adapters.stream_consumer import StreamMessage, decode_event
from penpay.service_layer import collection, crediting, debiting, notifications, payouts, reconciliation
from penpay.service_layer.background import BoundedTasks
from penpay.service_layer.callbacks import B2cNotice, StkNotice
from penpay.service_layer.flow import Delivery, Item, ProviderUnavailable
from penpay.service_layer.handlers import SUBSCRIPTIONS
from penpay.service_layer.intake import CallbackKind, ReceivedCallback
from penpay.worker.subscriptions import CallbackNotReady, callback_handler, event_handler
from penpay_domain.errors import ConcurrencyConflict, NotFound
from penpay_domain.events import DepositPaymentReceived, TransactionEvent, WithdrawalDebited, WithdrawalRequested
from penpay_domain.ids import PayoutId, TransactionId, new_transaction_id
from penpay_domain.money import Money
from penpay_domain.providers import (
    DerivTransferResult,
    Outcome,
    PaymentResult,
    PaymentStatus,
    PayoutRequestResult,
    StkPushResult,
)
from penpay_domain.transaction import Status, Transaction
from tests.fakes import FakeDeriv
from tests.integration.test_flows import (
    World,
    _link,
    completed,
    counting_commits,
    deposit,
    event_message,
    paid,
    processed_rows,
    requested,
    withdrawal,
    world,
)

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture, shared with test_flows


@contextlib.contextmanager
def statements_sent(world: World) -> Iterator[list[str]]:
    """The SQL statements sent on the world's engine while the block runs."""
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(world.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(world.db.engine.sync_engine, "before_cursor_execute", count)


def _event_id() -> int:
    return 10_000 + secrets.randbelow(10**12)


def payment_received(txn: Transaction) -> StreamMessage:
    return event_message(
        DepositPaymentReceived,
        txn,
        stream="penpay:deriv_transfers",
        transition=("AWAITING_PAYMENT", "PAYMENT_RECEIVED"),
        event_id=_event_id(),
    )


async def deposits(world: World, n: int) -> list[Transaction]:
    made = [deposit() for _ in range(n)]
    for txn in made:
        await world.store(txn)
    return made


async def paid_deposits(world: World, n: int) -> list[Transaction]:
    made = await deposits(world, n)
    for txn in made:
        await collection.push_stk(world.deps, txn.id)
        assert await world.settle_stk(txn.id, paid(f"R{secrets.token_hex(4).upper()}", txn.amount_kes)) == "paid"
    return made


class TestPushBatch:
    async def test_messages_in_flight_together_share_two_commits_and_each_deposit_is_pushed_once(
        self, world: World
    ) -> None:
        sub = SUBSCRIPTIONS["deposit"]
        made = await deposits(world, 6)
        handle = event_handler(sub, world.deps)
        messages = [requested(txn, event_id=_event_id()) for txn in made]
        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))
        assert counts == Counter(commit=2)  # the six intents, then the six answers with the six messages
        assert sorted(txn_id for txn_id, *_ in world.mpesa.pushes) == sorted(t.id for t in made)
        for txn in made:
            loaded = await world.get(txn.id)
            assert loaded.status is Status.AWAITING_PAYMENT
            assert loaded.mpesa_checkout_request_id
        recorded = await processed_rows(world, sub.group)
        assert all(m.dedupe_key in recorded for m in messages)

        await asyncio.gather(*(handle(m) for m in messages))  # all redelivered: nothing is pushed again
        assert len(world.mpesa.pushes) == 6

    async def test_two_messages_of_one_deposit_in_one_batch_push_it_once(self, world: World) -> None:
        sub = SUBSCRIPTIONS["deposit"]
        [txn] = await deposits(world, 1)
        handle = event_handler(sub, world.deps)
        first, again = requested(txn, event_id=_event_id()), requested(txn, event_id=_event_id(), entry_id="2-0")
        await asyncio.gather(handle(first), handle(again))
        assert len(world.mpesa.pushes) == 1
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT

    async def test_a_missing_transaction_fails_only_its_own_message(self, world: World) -> None:
        made = await deposits(world, 2)
        ghost = Item(new_transaction_id(datetime.now(UTC)), Delivery("deposit-test", "event:ghost"))
        items = [Item(made[0].id), ghost, Item(made[1].id)]
        results = await collection.push_stk_many(world.deps, items)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], NotFound)
        assert ghost.delivery is not None and not ghost.delivery.recorded
        assert {t for t, *_ in world.mpesa.pushes} == {made[0].id, made[1].id}

    async def test_a_push_that_never_reached_daraja_is_reported_for_its_own_item_only(self, world: World) -> None:
        made = await deposits(world, 3)
        unreachable = made[1].id
        original = world.mpesa.stk_push

        async def flaky(*, txn_id: TransactionId, amount: Money, msisdn: str, callback_url: str):  # type: ignore[no-untyped-def]
            if txn_id == unreachable:
                world.mpesa.pushes.append((txn_id, amount, msisdn, callback_url))  # type: ignore[arg-type]
                return StkPushResult(outcome=Outcome.UNAVAILABLE, message="down")
            return await original(txn_id=txn_id, amount=amount, msisdn=msisdn, callback_url=callback_url)  # type: ignore[arg-type]

        world.mpesa.stk_push = flaky  # type: ignore[method-assign]
        deliveries = [Delivery("deposit-test", f"event:{_event_id()}") for _ in made]
        results = await collection.push_stk_many(
            world.deps, [Item(t.id, d) for t, d in zip(made, deliveries, strict=True)]
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ProviderUnavailable)
        assert [d.recorded for d in deliveries] == [True, False, True]
        again = await world.get(unreachable)
        assert again.status is Status.PENDING and again.stk_requested_at is None  # may be pushed again
        assert (await world.get(made[0].id)).status is Status.AWAITING_PAYMENT


class TestCreditBatch:
    async def test_paid_deposits_are_credited_together_and_each_once(self, world: World) -> None:
        sub = SUBSCRIPTIONS["deriv"]
        made = await paid_deposits(world, 5)
        handle = event_handler(sub, world.deps)
        messages = [payment_received(txn) for txn in made]
        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))
        assert counts == Counter(commit=2)
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}
        for txn in made:
            assert (await world.get(txn.id)).status is Status.COMPLETED
        await asyncio.gather(*(handle(m) for m in messages))
        assert len(world.deriv.executed) == 5

    async def test_an_unknown_answer_leaves_that_deposit_crediting_and_the_others_complete(self, world: World) -> None:
        made = await paid_deposits(world, 3)
        unknown = made[0].id
        deriv: FakeDeriv = world.deriv
        original = deriv.transfer

        async def partly_unknown(*, reference: str, loginid: str, amount: Money) -> DerivTransferResult:
            if reference == unknown:
                return DerivTransferResult(outcome=Outcome.UNKNOWN, message="socket dropped")
            return await original(reference=reference, loginid=loginid, amount=amount)  # type: ignore[arg-type]

        deriv.transfer = partly_unknown  # type: ignore[method-assign]
        results = await crediting.credit_deposits(world.deps, [Item(t.id) for t in made])
        assert results == ["unknown", "done", "done"]
        assert (await world.get(unknown)).status is Status.CREDITING
        assert (await world.get(made[1].id)).status is Status.COMPLETED


async def withdrawals(world: World, n: int, *, codes: bool = True) -> list[Transaction]:
    """``n`` withdrawals whose users linked their Deriv account and (``codes``) typed their e-mailed code."""
    made = [withdrawal() for _ in range(n)]
    for txn in made:
        await world.store(txn)
    async with world.deps.uow() as uow:
        for n_, txn in enumerate(made):
            await _link(uow, txn, f"w{n_}@example.test")
            if codes:
                await uow.withdrawal_codes.put(txn.id, f"CODE{n_:02d}")
        await uow.commit()
    return made


def withdrawal_message(txn: Transaction, event: type[TransactionEvent], transition: tuple[str, str]) -> StreamMessage:
    return event_message(event, txn, stream="penpay:withdrawals", transition=transition, event_id=_event_id())


class TestWithdrawalBatches:
    async def test_debits_in_flight_together_share_two_commits_and_each_is_debited_once(self, world: World) -> None:
        sub = SUBSCRIPTIONS["withdrawal"]
        made = await withdrawals(world, 5)
        handle = event_handler(sub, world.deps)
        messages = [withdrawal_message(t, WithdrawalRequested, ("PENDING", "PENDING")) for t in made]
        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))
        assert counts == Counter(commit=2)  # the five intents (codes taken), then the five answers with the messages
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}
        assert [(await world.get(t.id)).status for t in made] == [Status.DEBITED] * 5
        async with world.deps.uow() as uow:
            assert await uow.withdrawal_codes.take_many([t.id for t in made]) == {}  # each code used once
        await asyncio.gather(*(handle(m) for m in messages))  # redelivered: nothing is debited again
        assert len(world.deriv.calls) == 5

    async def test_a_withdrawal_without_its_code_fails_alone_and_the_others_are_debited(self, world: World) -> None:
        made = await withdrawals(world, 3)
        async with world.deps.uow() as uow:
            await uow.withdrawal_codes.take(made[1].id)  # spent elsewhere
            await uow.commit()
        deliveries = [Delivery("withdrawal-test", f"event:{_event_id()}") for _ in made]
        results = await debiting.debit_withdrawals(
            world.deps, [Item(t.id, d) for t, d in zip(made, deliveries, strict=True)]
        )
        assert results == ["done", "failed", "done"]
        assert [d.recorded for d in deliveries] == [True, True, True]
        assert [(await world.get(t.id)).status for t in made] == [Status.DEBITED, Status.FAILED, Status.DEBITED]
        assert set(world.deriv.executed) == {made[0].id, made[2].id}

    async def test_payouts_in_flight_together_share_two_commits_and_each_is_sent_once(self, world: World) -> None:
        sub = SUBSCRIPTIONS["withdrawal"]
        made = await withdrawals(world, 4)
        await debiting.debit_withdrawals(world.deps, [Item(t.id) for t in made])
        handle = event_handler(sub, world.deps)
        messages = [withdrawal_message(t, WithdrawalDebited, ("DEBITING", "DEBITED")) for t in made]
        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))
        assert counts == Counter(commit=2)  # the four payout ids, then Daraja's four answers with the messages
        loaded = [await world.get(t.id) for t in made]
        assert [t.status for t in loaded] == [Status.PAYING_OUT] * 4
        assert sorted(p for p, *_ in world.mpesa.payouts) == sorted(str(t.payout_id) for t in loaded)
        await asyncio.gather(*(handle(m) for m in messages))  # redelivered: no second B2C request
        assert len(world.mpesa.payouts) == 4

    async def test_a_payout_daraja_could_not_take_fails_alone_and_keeps_its_payout_id(self, world: World) -> None:
        made = await withdrawals(world, 3)
        await debiting.debit_withdrawals(world.deps, [Item(t.id) for t in made])
        original = world.mpesa.b2c_payout
        down = made[1].id

        async def flaky(**kwargs: Any) -> PayoutRequestResult:
            if down in kwargs["result_url"]:
                return PayoutRequestResult(outcome=Outcome.UNAVAILABLE, message="down")
            return await original(**kwargs)

        world.mpesa.b2c_payout = flaky  # type: ignore[method-assign]
        results = await payouts.pay_outs(world.deps, [Item(t.id) for t in made])
        assert results[0] == "done" and results[2] == "done"
        assert isinstance(results[1], ProviderUnavailable)
        again = await world.get(down)
        assert again.status is Status.DEBITED and again.payout_id is not None  # the same id on the retry

        world.mpesa.b2c_payout = original  # type: ignore[method-assign]
        assert await payouts.pay_out(world.deps, down) == "done"
        assert (await world.get(down)).payout_id == again.payout_id


class _Decoder:
    """Bodies of these tests: {"checkout": ..., "receipt": ..., "amount": ...}."""

    def stk(self, body: str) -> StkNotice:
        data = json.loads(body)
        result = PaymentResult(
            status=PaymentStatus.PAID, result_code="0", receipt=data["receipt"], amount=Money.kes(data["amount"])
        )
        return StkNotice(checkout_request_id=data["checkout"], result=result)

    def b2c(self, kind: CallbackKind, body: str) -> B2cNotice:
        """{"conversation": ..., "receipt": ...}: the payout made."""
        data = json.loads(body)
        result = PaymentResult(status=PaymentStatus.PAID, result_code="0", receipt=data["receipt"])
        return B2cNotice(originator_conversation_id="", conversation_id=data["conversation"], result=result)

    def status(self, kind: CallbackKind, body: str) -> PaymentResult:
        raise ValueError("not in these tests")


async def _stored_callback(world: World, txn: Transaction, checkout: str) -> StreamMessage:
    body = json.dumps({"checkout": checkout, "receipt": f"R{secrets.token_hex(4).upper()}", "amount": 1_000})
    return await _stored(world, txn, CallbackKind.STK, body)


async def _stored(world: World, txn: Transaction, kind: CallbackKind, body: str) -> StreamMessage:
    async with world.deps.uow() as uow:
        stored = await uow.callbacks.add(
            ReceivedCallback(
                kind=kind,
                transaction_id=txn.id,
                source_ip="127.0.0.1",
                source_allowed=True,
                token_valid=True,
                body=body,
            )
        )
        await uow.commit()
    fields = {"callback_id": str(stored.id), "transaction_id": txn.id}
    return StreamMessage(stream="penpay:mpesa_callbacks", id=f"{stored.id}-0", fields=fields, deliveries=1)


async def _pushed_callbacks(world: World, n: int) -> tuple[list[Transaction], list[StreamMessage]]:
    """``n`` deposits pushed, and the stored STK callback (paid) of each, as the callback worker reads them."""
    made = await deposits(world, n)
    for txn in made:
        await collection.push_stk(world.deps, txn.id)
    messages = [await _stored_callback(world, t, str((await world.get(t.id)).mpesa_checkout_request_id)) for t in made]
    return made, messages


async def _outbox_rows(world: World, made: list[Transaction], event_type: str) -> list[tuple[str, bool]]:
    """(transaction id, stamped published) of the outbox rows of ``event_type`` for ``made``."""
    async with world.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.transaction_id, outbox.c.published_at).where(
                outbox.c.event_type == event_type, outbox.c.transaction_id.in_([t.id for t in made])
            )
        )
        return sorted((str(r.transaction_id), r.published_at is not None) for r in rows)


class TestCallbackBatch:
    async def test_callbacks_in_flight_together_are_applied_in_one_commit_and_their_credits_in_one_more(
        self, world: World
    ) -> None:
        made, messages = await _pushed_callbacks(world, 4)
        group = f"callbacks-{secrets.token_hex(4)}"
        handle = callback_handler(world.deps, _Decoder(), group)
        with counting_commits(world.db.engine) as counts, statements_sent(world) as statements:
            await asyncio.gather(*(handle(m) for m in messages))
        # the four payments (each deposit moved on to CREDITING in the same commit), then the four credits' answers
        assert counts == Counter(commit=2)
        # the deposits are read twice: found by their CheckoutRequestIDs, and again to record the credits
        assert sum(s.startswith("SELECT transactions.") for s in statements) == 2
        for txn in made:
            assert (await world.get(txn.id)).status is Status.COMPLETED
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}
        assert sorted(await processed_rows(world, group)) == sorted(m.dedupe_key for m in messages)
        # the callback worker carried deposit.payment_received itself: stamped published, never on the stream
        assert await _outbox_rows(world, made, DepositPaymentReceived.name) == sorted((t.id, True) for t in made)
        assert await world.published("deriv_transfers") == []

        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))  # redelivered: nothing to apply, nothing to commit
        assert counts["commit"] == 0
        assert len(world.deriv.calls) == 4

    async def test_b2c_results_in_flight_together_find_their_withdrawals_in_one_statement(self, world: World) -> None:
        made = await withdrawals(world, 3)
        conversations = {t.id: f"AG_{secrets.token_hex(8)}" for t in made}
        async with world.deps.uow() as uow:  # debited on Deriv, and each B2C payout accepted by Safaricom
            for txn in made:
                paying = await uow.transactions.get(txn.id, for_update=True)
                paying.start_debit(uow.now)
                paying.complete_debit(deriv_transaction_id=secrets.token_hex(4), now=uow.now)
                payout = PayoutId(f"P{secrets.token_hex(6)}")
                paying.payout_accepted(payout_id=payout, conversation_id=conversations[txn.id], now=uow.now)
            await uow.commit()
        messages = [
            await _stored(
                world,
                t,
                CallbackKind.B2C_RESULT,
                json.dumps({"conversation": conversations[t.id], "receipt": f"R{secrets.token_hex(4).upper()}"}),
            )
            for t in made
        ]
        handle = callback_handler(world.deps, _Decoder(), f"callbacks-{secrets.token_hex(4)}")

        with statements_sent(world) as statements:
            await asyncio.gather(*(handle(m) for m in messages))

        # the three found and locked by their ConversationIDs together, none on its own
        assert sum(s.startswith("SELECT transactions.") for s in statements) == 1
        assert [(await world.get(t.id)).status for t in made] == [Status.COMPLETED] * 3

    async def test_an_early_callback_is_retried_alone_and_the_others_are_applied(self, world: World) -> None:
        made = await deposits(world, 3)
        for txn in made[:2]:
            await collection.push_stk(world.deps, txn.id)
        # made[2] was never pushed: its callback cannot be its own yet
        messages = [
            await _stored_callback(world, t, str((await world.get(t.id)).mpesa_checkout_request_id or "ws_CO_unknown"))
            for t in made
        ]
        handle = callback_handler(world.deps, _Decoder(), f"callbacks-{secrets.token_hex(4)}")
        results = await asyncio.gather(*(handle(m) for m in messages), return_exceptions=True)
        assert results[0] is None and results[1] is None
        assert isinstance(results[2], CallbackNotReady)
        assert [(await world.get(t.id)).status for t in made] == [  # the two applied are credited at once
            Status.COMPLETED,
            Status.COMPLETED,
            Status.PENDING,
        ]


def _hold_the_gateway(world: World) -> asyncio.Event:
    """The fake gateway's transfers wait until the event returned is set."""
    released = asyncio.Event()
    transfer_many = world.deriv.transfer_many

    async def held(orders: Any) -> Any:
        await released.wait()
        return await transfer_many(orders)

    world.deriv.transfer_many = held  # type: ignore[method-assign]
    return released


class TestCarriedInTheBackground:
    """Given ``carries``, a callback batch is answered once its payments commit, its credits made beside the next."""

    async def test_the_messages_are_answered_before_the_credits_and_the_credits_are_made_once(
        self, world: World
    ) -> None:
        made, messages = await _pushed_callbacks(world, 4)
        released = _hold_the_gateway(world)
        carries = BoundedTasks(2, name="test-carries")
        group = f"callbacks-{secrets.token_hex(4)}"
        handle = callback_handler(world.deps, _Decoder(), group, carries=carries)
        await asyncio.wait_for(asyncio.gather(*(handle(m) for m in messages)), timeout=10)
        # answered with the gateway still holding the transfers: the payments and the marks are committed
        assert [(await world.get(t.id)).status for t in made] == [Status.CREDITING] * 4
        assert sorted(await processed_rows(world, group)) == sorted(m.dedupe_key for m in messages)
        assert carries.running == 1

        released.set()
        await carries.drain()
        assert carries.running == 0
        assert [(await world.get(t.id)).status for t in made] == [Status.COMPLETED] * 4
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}
        assert await world.published("deriv_transfers") == []  # carried to the end: never handed on

    async def test_a_batch_waits_for_a_slot_while_the_limit_of_credits_is_running(self, world: World) -> None:
        made, messages = await _pushed_callbacks(world, 2)
        released = _hold_the_gateway(world)
        carries = BoundedTasks(1, name="test-carries")
        handle = callback_handler(world.deps, _Decoder(), f"callbacks-{secrets.token_hex(4)}", carries=carries)
        await asyncio.wait_for(handle(messages[0]), timeout=10)  # its credit now holds the one slot
        second = asyncio.create_task(handle(messages[1]))
        await asyncio.sleep(0.5)
        # the second payment is recorded, but its answer waits for the slot
        assert (await world.get(made[1].id)).status is Status.CREDITING
        assert not second.done()

        released.set()
        await asyncio.wait_for(second, timeout=10)
        await carries.drain()
        assert [(await world.get(t.id)).status for t in made] == [Status.COMPLETED] * 2
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}


class TestCarriedCredit:
    """The callback worker credits the deposits it saw paid (``crediting.carry_credits``); where it cannot, the
    ``deriv`` consumers or the reconciler finish the credit from CREDITING, each reference transferred once."""

    async def test_a_gateway_that_cannot_be_reached_hands_the_credits_to_the_deriv_consumers(
        self, world: World
    ) -> None:
        made, messages = await _pushed_callbacks(world, 3)
        world.deriv.outcome = Outcome.UNAVAILABLE
        handle = callback_handler(world.deps, _Decoder(), f"callbacks-{secrets.token_hex(4)}")
        await asyncio.gather(*(handle(m) for m in messages))  # the payments are recorded: the messages are done
        assert [(await world.get(t.id)).status for t in made] == [Status.CREDITING] * 3
        assert sorted(await world.published("deriv_transfers")) == sorted(
            (DepositPaymentReceived.name, t.id) for t in made
        )

        world.deriv.outcome = Outcome.DONE
        entries = await world.redis.xrange(f"{world.prefix}:deriv_transfers")
        deriv = event_handler(SUBSCRIPTIONS["deriv"], world.deps)
        read = [(i.decode(), _text(f)) for i, f in entries]
        await asyncio.gather(
            *(
                deriv(StreamMessage(stream="deriv_transfers", id=i, fields=f, deliveries=1, event=decode_event(f)))
                for i, f in read
            )
        )
        assert [(await world.get(t.id)).status for t in made] == [Status.COMPLETED] * 3
        assert world.deriv.executed == {t.id: t.amount_usd for t in made}

    async def test_an_unknown_answer_is_left_to_the_reconciler(self, world: World) -> None:
        made, messages = await _pushed_callbacks(world, 2)
        world.deriv.outcome = Outcome.UNKNOWN
        handle = callback_handler(world.deps, _Decoder(), f"callbacks-{secrets.token_hex(4)}")
        await asyncio.gather(*(handle(m) for m in messages))
        assert [(await world.get(t.id)).status for t in made] == [Status.CREDITING] * 2
        assert await world.published("deriv_transfers") == []  # asking again is the reconciler's job, not a retry

        world.deriv.outcome = Outcome.DONE
        world.clock.offset = timedelta(minutes=2)
        await reconciliation.sweep(world.deps)
        assert [(await world.get(t.id)).status for t in made] == [Status.COMPLETED] * 2

    async def test_a_worker_that_dies_after_recording_the_payment_leaves_the_credit_to_the_reconciler(
        self, world: World
    ) -> None:
        [txn] = await deposits(world, 1)
        await collection.push_stk(world.deps, txn.id)
        async with world.deps.uow() as uow:  # what the callback worker commits before it makes the transfer
            loaded = await uow.transactions.get(txn.id, for_update=True)
            await collection.settle_stk_result(uow, loaded, paid("RDIED0001", loaded.amount_kes), from_query=False)
            assert [t.id for t in await crediting.start_credits(uow, [txn.id])] == [txn.id]
            await uow.transactions.save(loaded)
            await uow.commit(carried=crediting.CARRIED)
        assert (await world.get(txn.id)).status is Status.CREDITING
        assert await _outbox_rows(world, [txn], DepositPaymentReceived.name) == [(txn.id, True)]

        world.clock.offset = timedelta(minutes=2)
        assert (await reconciliation.sweep(world.deps))["done"] >= 1  # this one, and any other stale one here
        assert (await world.get(txn.id)).status is Status.COMPLETED
        assert world.deriv.executed == {txn.id: txn.amount_usd}

    async def test_only_deposits_seen_paid_in_this_unit_of_work_are_started(self, world: World) -> None:
        [earlier, other] = await paid_deposits(world, 2)  # paid before: their events were published then
        async with world.deps.uow() as uow:
            assert await crediting.start_credits(uow, [earlier.id, other.id]) == []
        assert (await world.get(earlier.id)).status is Status.PAYMENT_RECEIVED


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


class TestRepositoryBatches:
    async def test_save_many_refuses_the_whole_batch_when_one_row_moved_on(self, world: World) -> None:
        made = await deposits(world, 2)
        async with world.deps.uow() as uow:
            txns = await uow.transactions.get_many([t.id for t in made])
            assert list(txns) == [t.id for t in made]
            stale = txns[made[1].id]
            stale.version -= 1  # as if another writer had saved it since it was read
            with pytest.raises(ConcurrencyConflict):
                await uow.transactions.save_many(list(txns.values()))

    async def test_save_many_sets_the_changed_columns_of_every_row_in_one_statement(self, world: World) -> None:
        made = await deposits(world, 3)
        async with world.deps.uow() as uow:
            txns = list((await uow.transactions.get_many([t.id for t in made], for_update=True)).values())
            for n, txn in enumerate(txns):
                txn.request_stk_push(uow.now)
                txn.stk_push_accepted(f"ws_CO_{secrets.token_hex(6)}{n}", uow.now)
            txns[1].review_reason = "a note with 'quotes' and a ; semicolon"  # escaped like any value
            with statements_sent(world) as statements:
                await uow.transactions.save_many(txns)
            await uow.commit()
        assert [s.split(" ", 1)[0] for s in statements] == ["UPDATE"]  # one statement for the three rows
        # only what the step changed is sent: the rest of the row is already in the database
        assigned = set(re.findall(r"`(\w+)` = ", statements[0]))
        assert assigned == {
            "status",
            "mpesa_checkout_request_id",
            "review_reason",
            "stk_requested_at",
            "version",
            "updated_at",
        }
        # a value every row shares (the status, the step's time) is set once; only those that differ, by id
        assert set(re.findall(r"`(\w+)` = CASE id", statements[0])) == {"mpesa_checkout_request_id", "review_reason"}
        assert "`version` = `version` + 1" in statements[0] and statements[0].endswith("AND version = %s")
        for txn in txns:
            stored = await world.get(txn.id)
            assert transaction_row(stored) == transaction_row(txn)  # every column, as the aggregate holds it
            assert stored.version == 1 and stored.status is Status.AWAITING_PAYMENT

    async def test_rows_at_different_versions_are_each_matched_on_their_own(self, world: World) -> None:
        made = await deposits(world, 3)
        async with world.deps.uow() as uow:  # the first one moves on alone: versions 1, 0, 0
            [first] = (await uow.transactions.get_many([made[0].id], for_update=True)).values()
            first.request_stk_push(uow.now)
            await uow.transactions.save(first)
            await uow.commit()
        async with world.deps.uow() as uow:
            txns = list((await uow.transactions.get_many([t.id for t in made], for_update=True)).values())
            assert [t.version for t in txns] == [1, 0, 0]
            for txn in txns:
                txn.review_reason = "checked"
            with statements_sent(world) as statements:
                await uow.transactions.save_many(txns)
            await uow.commit()
        assert "(id, version) IN (" in statements[0]
        assert [(await world.get(t.id)).version for t in made] == [2, 1, 1]
        async with world.deps.uow() as uow:  # and one of them stale among different versions: nothing is saved
            txns = list((await uow.transactions.get_many([t.id for t in made], for_update=True)).values())
            txns[2].version -= 1
            for txn in txns:
                txn.review_reason = "again"
            with pytest.raises(ConcurrencyConflict):
                await uow.transactions.save_many(txns)
        assert [(await world.get(t.id)).review_reason for t in made] == ["checked"] * 3

    async def test_a_row_saved_twice_in_one_unit_of_work_sends_only_the_second_change(self, world: World) -> None:
        [txn] = await deposits(world, 1)
        async with world.deps.uow() as uow:
            loaded = await uow.transactions.get(txn.id, for_update=True)
            loaded.request_stk_push(uow.now)
            await uow.transactions.save(loaded)
            loaded.review_reason = "second thoughts"
            with statements_sent(world) as statements:
                await uow.transactions.save(loaded)
            await uow.commit()
        [update] = statements
        assert set(re.findall(r"`(\w+)` = ", update)) == {"review_reason", "version"}
        stored = await world.get(txn.id)
        assert transaction_row(stored) == transaction_row(loaded) and stored.version == 2

    async def test_a_refused_batch_save_leaves_every_row_as_it_was(self, world: World) -> None:
        made = await deposits(world, 2)
        async with world.deps.uow() as uow:
            txns = list((await uow.transactions.get_many([t.id for t in made], for_update=True)).values())
            for txn in txns:
                txn.request_stk_push(uow.now)
            txns[0].version -= 1  # as if another writer had saved it since it was read
            with pytest.raises(ConcurrencyConflict):
                await uow.transactions.save_many(txns)
        for txn in made:  # the unit of work rolled back: the row that did match was not kept either
            stored = await world.get(txn.id)
            assert stored.version == 0 and stored.stk_requested_at is None

    async def test_mark_many_counts_only_the_keys_it_recorded(self, world: World) -> None:
        group = f"g-{secrets.token_hex(4)}"
        async with world.deps.uow() as uow:
            assert await uow.processed.mark_many(group, ["a", "b"], uow.now) == 2
            await uow.commit()
        async with world.deps.uow() as uow:
            assert await uow.processed.mark_many(group, ["b", "c"], uow.now) == 1
            assert await uow.processed.seen_many(group, ["a", "c", "d"]) == {"a", "c"}
            await uow.commit()

    async def test_deposits_found_by_checkout_together_need_no_query_each(self, world: World) -> None:
        made = await deposits(world, 3)
        for txn in made:
            await collection.push_stk(world.deps, txn.id)
        checkouts = [str((await world.get(t.id)).mpesa_checkout_request_id) for t in made]
        async with world.deps.uow() as uow:
            found = await uow.transactions.find_many_by_checkout_request_ids([*checkouts, "ws_CO_nobody"])
            assert sorted(t.id for t in found.values()) == sorted(t.id for t in made)
            with statements_sent(world) as statements:
                again = [await uow.transactions.find_by_checkout_request_id(c) for c in checkouts]
                assert statements == []  # locked already, and the same aggregates
                assert [t.id for t in again if t is not None] == [found[c].id for c in checkouts]
                assert all(t is found[c] for t, c in zip(again, checkouts, strict=True))
                assert await uow.transactions.find_by_checkout_request_id("ws_CO_nobody") is None
                assert len(statements) == 1  # an id not found is asked again

    async def test_get_many_hands_back_the_aggregate_the_unit_of_work_already_holds(self, world: World) -> None:
        made = await deposits(world, 2)
        async with world.deps.uow() as uow:
            first = await uow.transactions.get(made[0].id)
            both = await uow.transactions.get_many([made[1].id, made[0].id], for_update=True)
            assert both[made[0].id] is first  # one aggregate per row: its changes are saved once
            assert list(both) == [made[1].id, made[0].id]  # in the order asked
            assert await uow.transactions.get_many([]) == {}


class TestNotifyBatch:
    async def test_notifications_in_flight_together_share_one_unit_of_work_and_each_is_recorded_once(
        self, world: World
    ) -> None:
        sub = SUBSCRIPTIONS["notifier"]
        made = await deposits(world, 4)
        async with world.deps.uow() as uow:  # two of the four users linked their Deriv account (an address)
            for n, txn in enumerate(made[:2]):
                await _link(uow, txn, f"payer{n}@example.test")
            await uow.commit()
        handle = event_handler(sub, world.deps)
        messages = [completed(txn, event_id=_event_id()) for txn in made]

        with counting_commits(world.db.engine) as counts:
            await asyncio.gather(*(handle(m) for m in messages))

        # the two with no address need no record (their read-only unit of work rolls back); the two sent are
        # recorded together after the sends
        assert counts == Counter(commit=1, rollback=1)
        sent = sorted(to for to, _, _ in world.deps.mailer.sent)  # type: ignore[attr-defined]
        assert sent == ["payer0@example.test", "payer1@example.test"]
        recorded = await processed_rows(world, sub.group)
        assert [recorded.count(m.dedupe_key) for m in messages] == [1, 1, 0, 0]

        await asyncio.gather(*(handle(m) for m in messages))  # all redelivered: nothing is sent again
        assert len(world.deps.mailer.sent) == 2  # type: ignore[attr-defined]

    async def test_a_failed_send_fails_only_its_own_message(self, world: World) -> None:
        made = await deposits(world, 2)
        async with world.deps.uow() as uow:
            await _link(uow, made[0], "bounce@example.test")
            await _link(uow, made[1], "payer@example.test")
            await uow.commit()
        world.deps.mailer.refuse = {"bounce@example.test"}  # type: ignore[attr-defined]
        items = [
            Item(txn.id, Delivery("notifier-test", f"event:{_event_id()}"), completed(txn, event_id=1).event)
            for txn in made
        ]
        results = await notifications.notify_many(world.deps, items)
        assert isinstance(results[0], MailNotSent) and results[1] == "sent"
        assert [to for to, _, _ in world.deps.mailer.sent] == ["payer@example.test"]  # type: ignore[attr-defined]
