"""The workers' steps against the real MariaDB, with fake *providers*: every path of a deposit and a withdrawal,
re-running steps (redelivery), unknown outcomes, and the reconciler. After each test the ledger invariants hold."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.db.outbox import PublishedMarks
from penpay.adapters.db.tables import outbox, processed_messages
from penpay.adapters.stream_consumer import StreamMessage
from penpay.adapters.streams import RedisStreamPublisher
from penpay.adapters.tokens import SecretBox
from penpay.bootstrap import Database
from penpay.service_layer import admin, collection, crediting, debiting, payouts, reconciliation
from penpay.service_layer.flow import Delivery, FlowDeps, ProviderUnavailable
from penpay.service_layer.handlers import SUBSCRIPTIONS
from penpay.service_layer.intake import CallbackKind, IntakeUnitOfWork, ReceivedCallback, StoredCallback
from penpay.service_layer.publishing import publish_quietly
from penpay.settings import Settings
from penpay.worker.main import PublishingUnitOfWork
from penpay.worker.subscriptions import event_handler
from penpay_domain import ledger
from penpay_domain.events import DepositCompleted, DepositRequested, TransactionEvent
from penpay_domain.fees import FeePolicy
from penpay_domain.fx import LockedRate
from penpay_domain.ids import TransactionId, UserId, new_quote_id, new_transaction_id, parse_deriv_loginid
from penpay_domain.money import Money
from penpay_domain.msisdn import parse_msisdn
from penpay_domain.ports import LinkedAccount
from penpay_domain.providers import DerivTransferResult, Outcome, PaymentResult, PaymentStatus
from penpay_domain.transaction import Parties, Status, Transaction
from tests.fakes import FakeCallbackUrls, FakeDeriv, FakeMailer, FakeMpesa

pytestmark = pytest.mark.integration


@dataclass
class ShiftedClock:
    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class World:
    deps: FlowDeps
    mpesa: FakeMpesa
    deriv: FakeDeriv
    clock: ShiftedClock
    db: Database
    box: SecretBox
    redis: aioredis.Redis
    prefix: str  # the streams' key prefix of this test's bus (deps.publish)

    async def published(self, stream: str) -> list[tuple[str, str]]:
        """(event type, transaction id) of what ``deps.publish`` put on ``stream``, in order."""
        entries = await self.redis.xrange(f"{self.prefix}:{stream}")
        return [(f[b"type"].decode(), f[b"transaction_id"].decode()) for _, f in entries]

    async def store(self, txn: Transaction) -> None:
        async with self.deps.uow() as uow:
            await uow.transactions.add(txn)
            await uow.commit()

    async def get(self, txn_id: TransactionId) -> Transaction:
        async with self.deps.uow() as uow:
            return await uow.transactions.get(txn_id)

    async def settle_stk(self, txn_id: TransactionId, result: PaymentResult) -> str:
        async with self.deps.uow() as uow:
            txn = await uow.transactions.get(txn_id, for_update=True)
            done = await collection.settle_stk_result(uow, txn, result, from_query=False)
            await uow.transactions.save(txn)
            await uow.commit()
        return done

    async def settle_payout(self, txn_id: TransactionId, result: PaymentResult) -> str:
        async with self.deps.uow() as uow:
            txn = await uow.transactions.get(txn_id, for_update=True)
            done = await payouts.apply_payout_result(uow, txn, result)
            await uow.transactions.save(txn)
            await uow.commit()
        return done


@pytest.fixture
async def world(db: Database, settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    clock = ShiftedClock()
    box = SecretBox.from_settings(settings)
    prefix = f"flows-{secrets.token_hex(4)}"
    deps = FlowDeps(
        uow=lambda: SqlIntakeUnitOfWork(db.engine, clock, box, actor="worker"),
        mpesa=FakeMpesa(),
        deriv=FakeDeriv(),
        mailer=FakeMailer(),
        clock=clock,
        callback_urls=FakeCallbackUrls(),
        publish=partial(publish_quietly, RedisStreamPublisher(redis_client, prefix=prefix)),
        reconcile_after=timedelta(seconds=30),
    )
    async with deps.uow() as uow:
        for spec, amount in (
            (ledger.DERIV_AGENT, Money.usd_cents(1_000_000_00)),
            (ledger.MPESA_DISBURSEMENTS, Money.kes(10_000_000)),
        ):
            await uow.ledger.apply(ledger.funding(f"fund:{secrets.token_hex(6)}", spec, amount))
        await uow.commit()
    w = World(deps, deps.mpesa, deps.deriv, clock, db, box, redis_client, prefix)  # type: ignore[arg-type]
    yield w
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis_client.delete(*keys)
    check = await admin.check_ledger(db.uow)
    assert check.ok, check.problems


def _quote(now: datetime) -> LockedRate:
    return LockedRate(
        quote_id=new_quote_id(now),
        mid=Decimal("129.50"),
        spread_bps=150,
        issued_at=now,
        expires_at=now + timedelta(minutes=1),
    )


def _parties(msisdn: str = "0712345678") -> Parties:
    return Parties(
        user_id=UserId(f"u-{secrets.token_hex(4)}"),
        msisdn=parse_msisdn(msisdn),
        deriv_loginid=parse_deriv_loginid("CR1234567"),
    )


def deposit(kes: int = 1_000) -> Transaction:
    now = datetime.now(UTC)
    return Transaction.new_deposit(
        id=new_transaction_id(now),
        parties=_parties(),
        amount_kes=Money.kes(kes),
        quote=_quote(now),
        fee_policy=FeePolicy(),
        now=now,
    )


def withdrawal(cents: int = 10_00) -> Transaction:
    now = datetime.now(UTC)
    return Transaction.new_withdrawal(
        id=new_transaction_id(now),
        parties=_parties(),
        amount_usd=Money.usd_cents(cents),
        quote=_quote(now),
        fee_policy=FeePolicy(bps=100),
        now=now,
    )


PAID = PaymentResult(status=PaymentStatus.PAID, result_code="0", receipt="", amount=None)


def paid(receipt: str, amount: Money | None = None) -> PaymentResult:
    return PaymentResult(status=PaymentStatus.PAID, result_code="0", receipt=receipt, amount=amount)


class TestDeposit:
    async def test_happy_path_pushes_once_credits_once_and_completes(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)

        await collection.push_stk(world.deps, txn.id)
        await collection.push_stk(world.deps, txn.id)  # redelivered message
        assert len(world.mpesa.pushes) == 1
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT

        assert await world.settle_stk(txn.id, paid(f"R{secrets.token_hex(4).upper()}", Money.kes(1_000))) == "paid"
        assert await world.settle_stk(txn.id, paid("DUPLICATE", Money.kes(1_000))) == "duplicate"

        assert await crediting.credit_deposit(world.deps, txn.id) == "done"
        assert await crediting.credit_deposit(world.deps, txn.id) == "not due"
        final = await world.get(txn.id)
        assert final.status is Status.COMPLETED
        assert world.deriv.executed == {txn.id: txn.amount_usd}

    async def test_a_cancelled_push_fails_the_deposit_and_releases_the_reservation(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)

        result = PaymentResult(
            status=PaymentStatus.CANCELLED, result_code="1032", description="Request cancelled by user"
        )
        assert await world.settle_stk(txn.id, result) == "failed"

        final = await world.get(txn.id)
        assert final.status is Status.PAYMENT_FAILED
        assert final.failure_code == "1032"

    async def test_a_push_refused_by_daraja_fails_at_once(self, world: World) -> None:
        world.mpesa.stk_outcome = Outcome.REJECTED
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        assert (await world.get(txn.id)).status is Status.PAYMENT_FAILED

    async def test_a_push_that_never_reached_daraja_may_be_sent_again(self, world: World) -> None:
        world.mpesa.stk_outcome = Outcome.UNAVAILABLE
        txn = deposit()
        await world.store(txn)
        with pytest.raises(ProviderUnavailable):
            await collection.push_stk(world.deps, txn.id)
        world.mpesa.stk_outcome = Outcome.DONE
        await collection.push_stk(world.deps, txn.id)
        assert len(world.mpesa.pushes) == 2
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT

    async def test_with_no_access_token_nothing_is_recorded_and_the_push_goes_later(self, world: World) -> None:
        world.mpesa.is_ready = False
        txn = deposit()
        await world.store(txn)
        with pytest.raises(ProviderUnavailable, match="nothing recorded"):
            await collection.push_stk(world.deps, txn.id)
        waiting = await world.get(txn.id)
        assert waiting.status is Status.PENDING and waiting.stk_requested_at is None  # no intent: no limbo
        assert world.mpesa.pushes == []
        world.mpesa.is_ready = True
        await collection.push_stk(world.deps, txn.id)
        assert len(world.mpesa.pushes) == 1
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT

    async def test_a_push_with_a_lost_answer_is_never_sent_again_and_the_callback_still_settles_it(
        self, world: World
    ) -> None:
        world.mpesa.stk_outcome = Outcome.UNKNOWN
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        await collection.push_stk(world.deps, txn.id)
        assert len(world.mpesa.pushes) == 1
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT
        assert await world.settle_stk(txn.id, paid("RLATE00001", Money.kes(1_000))) == "paid"

    async def test_a_wrong_amount_goes_to_review_and_suspense_not_to_deriv(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        assert await world.settle_stk(txn.id, paid("RWRONG0001", Money.kes(999))) == "amount mismatch"
        assert (await world.get(txn.id)).status is Status.NEEDS_REVIEW

    async def test_a_late_success_after_a_failure_is_kept_in_suspense(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        await world.settle_stk(txn.id, PaymentResult(status=PaymentStatus.TIMED_OUT, result_code="1037"))
        assert await world.settle_stk(txn.id, paid("RLATE00002", Money.kes(1_000))) == "late success"
        assert (await world.get(txn.id)).status is Status.PAYMENT_FAILED

    async def test_deriv_rejects_the_credit_so_the_payer_is_refunded(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        await world.settle_stk(txn.id, paid(f"R{secrets.token_hex(4).upper()}", Money.kes(1_000)))
        world.deriv.outcome = Outcome.REJECTED

        assert await crediting.credit_deposit(world.deps, txn.id) == "rejected"
        assert (await world.get(txn.id)).status is Status.REFUNDING
        assert await payouts.refund_deposit(world.deps, txn.id) == "done"
        assert await payouts.refund_deposit(world.deps, txn.id) == "not due"
        assert len(world.mpesa.payouts) == 1
        assert await world.settle_payout(txn.id, paid("RREFUND001")) == "paid"
        final = await world.get(txn.id)
        assert final.status is Status.REFUNDED
        assert world.mpesa.payouts[0][1] == Money.kes(1_000)

    async def test_an_unknown_credit_stays_crediting_until_the_reconciler_settles_it(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        await world.settle_stk(txn.id, paid(f"R{secrets.token_hex(4).upper()}", Money.kes(1_000)))
        world.deriv.outcome = Outcome.UNKNOWN
        assert await crediting.credit_deposit(world.deps, txn.id) == "unknown"
        assert (await world.get(txn.id)).status is Status.CREDITING

        world.deriv.outcome = Outcome.DONE
        world.clock.offset = timedelta(minutes=2)
        done = await reconciliation.sweep(world.deps)
        assert done["done"] >= 1
        assert (await world.get(txn.id)).status is Status.COMPLETED
        assert world.deriv.executed[txn.id] == txn.amount_usd  # the gateway executes a reference once


class TestWithdrawal:
    async def _linked(self, world: World, txn: Transaction, code: str = "ABC123") -> None:
        async with world.deps.uow() as uow:
            await _link(uow, txn, "user@example.test")
            await uow.withdrawal_codes.put(txn.id, code)
            await uow.commit()

    async def _debit_without_an_answer(self, world: World) -> Transaction:
        """A linked withdrawal whose first debit got no answer from Deriv (left DEBITING)."""
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)
        world.deriv.outcome = Outcome.UNKNOWN
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "unknown"
        return txn

    async def test_happy_path_debits_once_pays_out_once_and_completes(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)

        assert await debiting.debit_withdrawal(world.deps, txn.id) == "done"
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "not due"
        assert await payouts.pay_out(world.deps, txn.id) == "done"
        assert await payouts.pay_out(world.deps, txn.id) == "not due"
        assert await world.settle_payout(txn.id, paid("RPAYOUT001")) == "paid"
        final = await world.get(txn.id)
        assert final.status is Status.COMPLETED
        assert final.mpesa_receipt == "RPAYOUT001"
        assert len(world.mpesa.payouts) == 1

    async def test_without_a_code_the_withdrawal_fails_and_nothing_moves(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "failed"
        assert (await world.get(txn.id)).status is Status.FAILED
        assert world.deriv.calls == []

    async def test_a_debit_without_an_answer_keeps_its_code_and_is_sent_again_once_it_provably_never_ran(
        self, world: World
    ) -> None:
        """The worker lost Deriv's answer (a timeout, or it died before the answer was recorded): the withdrawal
        stays DEBITING with its code; a later attempt looks the reference up first, waits while the first attempt
        may still be in flight, then sends the same reference again. The code goes with the answer."""
        txn = await self._debit_without_an_answer(world)
        assert (await world.get(txn.id)).status is Status.DEBITING
        async with world.deps.uow() as uow:
            assert await uow.withdrawal_codes.get_many([txn.id]) == {txn.id: "ABC123"}  # kept, sealed

        world.deriv.outcome = Outcome.DONE
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "unknown"  # too soon: not in the statement yet
        assert world.deriv.calls == [txn.id]
        world.clock.offset = timedelta(minutes=2)  # the reconciler's turn: the first attempt is long dead
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "done"
        assert (await world.get(txn.id)).status is Status.DEBITED
        assert world.deriv.calls == [txn.id, txn.id] and world.deriv.executed == {txn.id: txn.amount_usd}
        async with world.deps.uow() as uow:
            assert await uow.withdrawal_codes.get_many([txn.id]) == {}  # spent with the answer

    async def test_a_debit_that_reached_deriv_but_lost_its_answer_is_found_not_sent_again(self, world: World) -> None:
        txn = await self._debit_without_an_answer(world)  # DEBITING, its answer lost...
        world.deriv.executed[txn.id] = txn.amount_usd  # ...though Deriv did execute it
        world.clock.offset = timedelta(minutes=2)

        assert await debiting.debit_withdrawal(world.deps, txn.id) == "done"  # from the statement
        assert (await world.get(txn.id)).status is Status.DEBITED
        assert world.deriv.calls == [txn.id]  # never sent again (Deriv would refuse the spent code)
        async with world.deps.uow() as uow:
            assert await uow.withdrawal_codes.get_many([txn.id]) == {}

    async def test_deriv_refuses_the_debit(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)
        world.deriv.outcome = Outcome.REJECTED
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "rejected"
        assert (await world.get(txn.id)).status is Status.FAILED
        async with world.deps.uow() as uow:
            assert await uow.withdrawal_codes.get_many([txn.id]) == {}  # a refused debit spends its code too

    async def test_a_refused_verification_code_says_so_not_derivs_token_wording(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)
        world.deriv.outcome = Outcome.REJECTED
        world.deriv.rejection = DerivTransferResult(
            outcome=Outcome.REJECTED,
            error_code="InvalidToken",
            message="Your token has expired or is invalid.",
            refused_by="paymentagent_withdraw",
        )
        assert await debiting.debit_withdrawal(world.deps, txn.id) == "rejected"
        failed = await world.get(txn.id)
        assert (failed.status, failed.failure_code) == (Status.FAILED, "verification_code_invalid")
        assert failed.failure_reason == (
            "Deriv refused the verification code: it is wrong, already used or expired. Request a new code and "
            "withdraw again (Deriv: Your token has expired or is invalid.)"
        )

    async def test_a_failed_payout_is_reversed_to_the_deriv_account(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)
        await debiting.debit_withdrawal(world.deps, txn.id)
        await payouts.pay_out(world.deps, txn.id)

        failure = PaymentResult(status=PaymentStatus.FAILED, result_code="2040", description="not registered")
        assert await world.settle_payout(txn.id, failure) == "failed"
        assert (await world.get(txn.id)).status is Status.REVERSING
        assert await crediting.reverse_withdrawal(world.deps, txn.id) == "done"
        assert await crediting.reverse_withdrawal(world.deps, txn.id) == "not due"
        assert (await world.get(txn.id)).status is Status.REVERSED
        assert world.deriv.executed[crediting.reversal_reference(txn.id)] == txn.amount_usd

    async def test_a_duplicate_payout_waits_for_its_result_instead_of_paying_twice(self, world: World) -> None:
        txn = withdrawal()
        await world.store(txn)
        await self._linked(world, txn)
        await debiting.debit_withdrawal(world.deps, txn.id)
        world.mpesa.b2c_duplicate = True
        assert await payouts.pay_out(world.deps, txn.id) == "duplicate"
        assert (await world.get(txn.id)).status is Status.PAYING_OUT

        world.clock.offset = timedelta(minutes=2)
        await reconciliation.sweep(world.deps)
        assert world.mpesa.status_queries
        assert await world.settle_payout(txn.id, paid("RPAYOUT002")) == "paid"


class TestReconciler:
    async def test_an_outcome_unknown_for_too_long_goes_to_review(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        world.clock.offset = world.deps.give_up_after + timedelta(minutes=1)
        done = await reconciliation.sweep(world.deps)
        assert done["needs review"] >= 1
        assert (await world.get(txn.id)).status is Status.NEEDS_REVIEW

    async def test_a_late_callback_is_asked_for_with_stk_push_query(self, world: World) -> None:
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        world.mpesa.query_result = PaymentResult(status=PaymentStatus.PAID, result_code="0")
        world.clock.offset = timedelta(minutes=2)
        await reconciliation.sweep(world.deps)
        after = await world.get(txn.id)
        assert after.status in (Status.PAYMENT_RECEIVED, Status.CREDITING, Status.COMPLETED)


class TestCallbackOvertakesThePushAnswer:
    async def test_a_callback_arriving_before_the_push_answer_is_recorded_still_settles_the_deposit(
        self, world: World
    ) -> None:
        from penpay.service_layer.callbacks import StkNotice, Verdict, apply_stk_callback  # noqa: PLC0415

        txn = deposit()
        await world.store(txn)
        await _push_recorded(world, txn.id)  # the worker recorded the push; Daraja's answer is on its way
        stored = _stk_callback(1, txn.id)
        async with world.deps.uow() as uow:
            verdict = await apply_stk_callback(
                uow,
                stored,
                StkNotice(checkout_request_id=f"ws_CO_{txn.id}", result=paid("RFAST00001", Money.kes(1_000))),
            )
            await uow.commit()

        assert verdict is Verdict.APPLIED
        after = await world.get(txn.id)
        assert after.status is Status.PAYMENT_RECEIVED
        assert after.mpesa_checkout_request_id == f"ws_CO_{txn.id}"

    async def test_a_callback_that_waited_for_the_row_lock_while_the_push_answer_was_recorded_is_applied(
        self, world: World
    ) -> None:
        """The callback finds no transaction by its CheckoutRequestID (the push's answer is not recorded yet), then
        waits for the deposit's row lock while the push step records that very id and commits: it is the match."""
        from penpay.service_layer.callbacks import StkNotice, Verdict, apply_stk_callback  # noqa: PLC0415

        txn = deposit()
        await world.store(txn)
        await _push_recorded(world, txn.id)
        stored = _stk_callback(2, txn.id)
        checkout = f"ws_CO_{txn.id}"

        async def apply() -> Verdict:
            async with world.deps.uow() as uow:
                verdict = await apply_stk_callback(
                    uow, stored, StkNotice(checkout_request_id=checkout, result=paid("RWAIT00001", Money.kes(1_000)))
                )
                await uow.commit()
                return verdict

        async with world.deps.uow() as push_answer:  # the push step's second unit of work holds the row lock
            loaded = await push_answer.transactions.get(txn.id, for_update=True)
            callback = asyncio.create_task(apply())
            await _until_waiting_for_a_lock(world, txn.id)
            loaded.stk_push_accepted(checkout, push_answer.now)
            await push_answer.transactions.save(loaded)
            await push_answer.commit()

        assert await asyncio.wait_for(callback, 10) is Verdict.APPLIED
        after = await world.get(txn.id)
        assert after.status is Status.PAYMENT_RECEIVED
        assert after.mpesa_receipt == "RWAIT00001"


async def _until_waiting_for_a_lock(world: World, txn_id: str) -> None:
    """Until a connection to this test's database waits for a row lock with a statement on ``transactions`` (InnoDB's
    own view, which it refreshes only when not read for 0.1 s: hence the pace). Only ``txn_id``'s row is held here;
    the statement's text cannot name it, since prepared statements show their placeholders, not their values."""
    query = sa.text(
        "SELECT COUNT(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
        "ON p.id = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE() "
        "AND t.trx_query LIKE '%transactions%'"
    )
    async with world.db.engine.connect() as conn:
        for _ in range(50):
            if await conn.scalar(query):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"nothing waited for the row lock of {txn_id}")


@contextlib.contextmanager
def counting_commits(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Counts the COMMITs and ROLLBACKs sent on the engine's connections while the block runs."""
    counts: Counter[str] = Counter()

    def on_commit(_: object) -> None:
        counts["commit"] += 1

    def on_rollback(_: object) -> None:
        counts["rollback"] += 1

    sync = engine.sync_engine
    sa.event.listen(sync, "commit", on_commit)
    sa.event.listen(sync, "rollback", on_rollback)
    try:
        yield counts
    finally:
        sa.event.remove(sync, "commit", on_commit)
        sa.event.remove(sync, "rollback", on_rollback)


async def processed_rows(world: World, group: str) -> list[str]:
    async with world.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(processed_messages.c.message_key).where(processed_messages.c.consumer_group == group)
        )
        return [str(r.message_key) for r in rows]


def event_message(
    event_type: type[TransactionEvent],
    txn: Transaction,
    *,
    stream: str,
    transition: tuple[str | None, str],
    event_id: int,
    entry_id: str = "1-0",
) -> StreamMessage:
    """A deposit's event as the worker reads it from ``stream`` (``transition``: from and to status)."""
    event = event_type(
        transaction_id=txn.id,
        occurred_at=datetime.now(UTC),
        kind="deposit",
        user_id=txn.parties.user_id,
        from_status=transition[0],
        to_status=transition[1],
        event_id=event_id,
    )
    fields = {"event_id": str(event_id), "transaction_id": txn.id}
    return StreamMessage(stream=stream, id=entry_id, fields=fields, deliveries=1, event=event)


def requested(txn: Transaction, *, event_id: int, entry_id: str = "1-0") -> StreamMessage:
    return event_message(
        DepositRequested,
        txn,
        stream="penpay:deposits",
        transition=(None, "PENDING"),
        event_id=event_id,
        entry_id=entry_id,
    )


def completed(txn: Transaction, *, event_id: int) -> StreamMessage:
    return event_message(
        DepositCompleted, txn, stream="penpay:notifications", transition=("CREDITING", "COMPLETED"), event_id=event_id
    )


class TestDeliveries:
    """Deduplicating a message costs no unit of work of its own: the step checks it in its first one and records it
    in the commit that concludes it."""

    async def test_a_step_records_its_message_in_the_commit_that_concludes_it(self, world: World) -> None:
        group = f"g-{secrets.token_hex(4)}"
        txn = deposit()
        await world.store(txn)
        delivery = Delivery(group, "event:1")
        await collection.push_stk(world.deps, txn.id, delivery=delivery)
        assert delivery.recorded
        assert await processed_rows(world, group) == ["event:1"]
        assert (await world.get(txn.id)).status is Status.AWAITING_PAYMENT

    async def test_a_message_its_group_processed_is_skipped_before_anything_is_decided(self, world: World) -> None:
        group = f"g-{secrets.token_hex(4)}"
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        await world.settle_stk(txn.id, paid(f"R{secrets.token_hex(4).upper()}", Money.kes(1_000)))
        async with world.deps.uow() as uow:
            await uow.processed.mark(group, "event:2", uow.now)
            await uow.commit()

        again = Delivery(group, "event:2")
        assert await crediting.credit_deposit(world.deps, txn.id, delivery=again) == "duplicate"
        assert again.recorded
        assert world.deriv.executed == {}
        assert (await world.get(txn.id)).status is Status.PAYMENT_RECEIVED
        assert await crediting.credit_deposit(world.deps, txn.id) == "done"  # the reconciler has no delivery

    async def test_an_unavailable_provider_records_nothing_so_the_message_is_handled_again(self, world: World) -> None:
        group = f"g-{secrets.token_hex(4)}"
        world.mpesa.stk_outcome = Outcome.UNAVAILABLE
        txn = deposit()
        await world.store(txn)
        delivery = Delivery(group, "event:3")
        with pytest.raises(ProviderUnavailable):
            await collection.push_stk(world.deps, txn.id, delivery=delivery)
        assert not delivery.recorded
        assert await processed_rows(world, group) == []

    async def test_a_step_with_nothing_due_leaves_the_record_to_its_caller(self, world: World) -> None:
        group = f"g-{secrets.token_hex(4)}"
        txn = deposit()
        await world.store(txn)
        delivery = Delivery(group, "event:4")
        assert await crediting.credit_deposit(world.deps, txn.id, delivery=delivery) == "not due"
        assert not delivery.recorded


class TestEventHandler:
    async def test_a_push_step_commits_twice_with_no_unit_of_work_for_deduplication(self, world: World) -> None:
        sub = SUBSCRIPTIONS["deposit"]
        txn = deposit()
        await world.store(txn)
        handle = event_handler(sub, world.deps)
        with counting_commits(world.db.engine) as counts:
            await handle(requested(txn, event_id=10_000 + secrets.randbelow(10**9)))
        assert counts == Counter(commit=2)  # the push recorded, then its answer with the message: no rollback
        assert len(world.mpesa.pushes) == 1

    async def test_a_republished_message_is_skipped_and_recorded_once(self, world: World) -> None:
        sub = SUBSCRIPTIONS["deposit"]
        txn = deposit()
        await world.store(txn)
        handle = event_handler(sub, world.deps)
        event_id = 10_000 + secrets.randbelow(10**9)
        await handle(requested(txn, event_id=event_id, entry_id="1-0"))
        await handle(requested(txn, event_id=event_id, entry_id="2-0"))  # the relay published it again
        assert len(world.mpesa.pushes) == 1
        assert (await processed_rows(world, sub.group)).count(f"event:{event_id}") == 1

    async def test_a_notification_with_no_one_to_send_to_is_done_without_a_write(self, world: World) -> None:
        sub = SUBSCRIPTIONS["notifier"]
        txn = deposit()
        await world.store(txn)  # its user never linked the account: no address
        message = completed(txn, event_id=10_000 + secrets.randbelow(10**9))
        handle = event_handler(sub, world.deps)
        with counting_commits(world.db.engine) as counts:
            await handle(message)
        assert counts["commit"] == 0  # read, found no one, nothing to record
        assert message.dedupe_key not in await processed_rows(world, sub.group)
        assert world.deps.mailer.sent == []  # type: ignore[attr-defined]

        async with world.deps.uow() as uow:  # linked later: a redelivered message is then sent, once
            await _link(uow, txn, "late@example.test")
            await uow.commit()
        await handle(message)
        await handle(message)
        assert [to for to, _, _ in world.deps.mailer.sent] == ["late@example.test"]  # type: ignore[attr-defined]

    async def test_a_sent_notification_is_recorded_after_the_send(self, world: World) -> None:
        sub = SUBSCRIPTIONS["notifier"]
        txn = deposit()
        await world.store(txn)
        async with world.deps.uow() as uow:
            await _link(uow, txn, "payer@example.test")
            await uow.commit()
        message = completed(txn, event_id=10_000 + secrets.randbelow(10**9))
        handle = event_handler(sub, world.deps)
        await handle(message)
        await handle(message)  # redelivered: already processed, not sent again
        assert [to for to, _, _ in world.deps.mailer.sent] == ["payer@example.test"]  # type: ignore[attr-defined]
        assert (await processed_rows(world, sub.group)).count(message.dedupe_key) == 1

    async def test_a_message_with_nothing_due_is_still_recorded_by_the_handler(self, world: World) -> None:
        sub = SUBSCRIPTIONS["deposit"]
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)  # the reconciler pushed first
        event_id = 10_000 + secrets.randbelow(10**9)
        await event_handler(sub, world.deps)(requested(txn, event_id=event_id))
        assert len(world.mpesa.pushes) == 1
        assert f"event:{event_id}" in await processed_rows(world, sub.group)


class TestWorkerPublishing:
    async def test_events_are_published_after_the_connection_is_released_and_their_rows_stamped(
        self, world: World, settings: Settings, redis_client: aioredis.Redis
    ) -> None:
        prefix = f"{settings.stream_prefix}:pub-{secrets.token_hex(4)}"
        checked_out_at_stamp: list[int] = []
        marks = PublishedMarks(world.db.engine, world.clock)

        async def stamp(ids: Sequence[int]) -> None:
            checked_out_at_stamp.append(world.db.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]
            await marks.add(ids)

        publisher = RedisStreamPublisher(redis_client, prefix=prefix, mark_published=stamp)
        txn = deposit()
        async with PublishingUnitOfWork(world.db, world.box, publisher) as uow:
            await uow.transactions.add(txn)
            [event] = await uow.commit()
            assert await redis_client.xlen(f"{prefix}:{event.stream}") == 0  # not while the connection is held
        await marks.aclose()

        assert checked_out_at_stamp == [0]
        [(_, fields)] = await redis_client.xrange(f"{prefix}:{event.stream}")
        assert fields[b"event_id"] == str(event.event_id).encode()
        async with world.db.engine.connect() as conn:
            stamped = await conn.scalar(sa.select(outbox.c.published_at).where(outbox.c.id == event.event_id))
        assert stamped is not None
        await redis_client.delete(f"{prefix}:{event.stream}")

    async def test_stamps_added_within_the_linger_are_written_by_one_statement(self, world: World) -> None:
        """At a moderate rate every unit of work publishes on its own; its stamps wait for the others'."""
        ids = [10**15 + secrets.randbelow(10**12) for _ in range(5)]  # rows of no one: only the statements count
        statements: list[object] = []

        def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
            if statement.startswith("UPDATE outbox") and any(str(i) in repr(parameters) for i in ids):
                statements.append(parameters)

        sa.event.listen(world.db.engine.sync_engine, "before_cursor_execute", record)
        try:
            marks = PublishedMarks(world.db.engine, world.clock, linger_s=1.0)
            for stamp in ids:
                await marks.add([stamp])
                await asyncio.sleep(0.01)  # each in a step of its own: without the linger the first would go alone
            await marks.aclose()
        finally:
            sa.event.remove(world.db.engine.sync_engine, "before_cursor_execute", record)
        assert len(statements) == 1

    async def test_carried_events_are_written_published_and_not_sent(self, world: World) -> None:
        publisher = RedisStreamPublisher(world.redis, prefix=world.prefix)
        txn = deposit()
        await world.store(txn)
        await collection.push_stk(world.deps, txn.id)
        async with PublishingUnitOfWork(world.db, world.box, publisher) as uow:
            loaded = await uow.transactions.get(txn.id, for_update=True)
            await collection.settle_stk_result(uow, loaded, paid("RCARRY001", loaded.amount_kes), from_query=False)
            loaded.start_credit(uow.now)
            await uow.transactions.save(loaded)
            events = await uow.commit(carried=crediting.CARRIED)
        assert [e.name for e in events] == ["deposit.payment_received", "deposit.credit_started"]
        async with world.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(outbox.c.event_type, outbox.c.published_at).where(outbox.c.transaction_id == txn.id)
            )
            stamped = {str(r.event_type): r.published_at is not None for r in rows}
        assert stamped["deposit.payment_received"] is True  # carried: the relay never sends it
        assert "deposit.credit_started" not in stamped
        # no worker's business (RECORDED_ONLY): no outbox row, no id, sent nowhere (the audit log records it)
        assert [e.event_id is None for e in events] == [False, True]
        assert await world.published("deriv_transfers") == []
        sent = [
            m
            for stream in ("deposits", "deriv_transfers", "withdrawals", "notifications", "audit")
            for m in await world.published(stream)
        ]
        assert sent == []


async def _push_recorded(world: World, txn_id: TransactionId) -> None:
    """What the deposit worker commits before it sends the STK push."""
    async with world.deps.uow() as uow:
        loaded = await uow.transactions.get(txn_id, for_update=True)
        loaded.request_stk_push(uow.now)
        await uow.transactions.save(loaded)
        await uow.commit()


def _stk_callback(callback_id: int, txn_id: TransactionId) -> StoredCallback:
    """A verified STK callback as the API stored it (its body is decoded separately in these tests)."""
    return StoredCallback(
        id=callback_id,
        received_at=datetime.now(UTC),
        callback=ReceivedCallback(
            kind=CallbackKind.STK,
            transaction_id=txn_id,
            source_ip="127.0.0.1",
            source_allowed=True,
            token_valid=True,
            body="{}",
        ),
    )


async def _link(uow: IntakeUnitOfWork, txn: Transaction, email: str) -> None:
    """The user's Deriv account linked, as ``POST /deriv/link`` leaves it."""
    await uow.linked_accounts.upsert(
        LinkedAccount(
            user_id=txn.parties.user_id,
            loginid=txn.parties.deriv_loginid,
            currency="USD",
            token_ciphertext=b"sealed",
            linked_at=uow.now,
            email=email,
        )
    )
