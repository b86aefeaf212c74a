"""Turning the service layer's subscriptions (``service_layer.handlers``) into stream handlers.

Each handler runs the step with a :class:`~penpay.service_layer.flow.Delivery` for the message's ``dedupe_key`` (the
outbox event id): the step skips a message its group already processed (checked in its first unit of work) and
records the key in the unit of work that concludes it, in the same commit as its answer, so deduplicating costs no
unit of work of its own. A step that ends without such a commit (nothing due, an outcome left unknown, an e-mail
sent) is recorded here afterwards; steps are idempotent by their state guards, so the window between their commit
and that record (a crash there) only means the step runs again and finds nothing to do. Callback messages carry the
stored callback's id; applying one is a single unit of work that records the key in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from penpay.adapters.db.unit_of_work import with_retries
from penpay.adapters.stream_consumer import PoisonMessage, StreamMessage
from penpay.logging import get_logger
from penpay.service_layer import crediting
from penpay.service_layer.background import BoundedTasks
from penpay.service_layer.batching import MicroBatcher
from penpay.service_layer.callbacks import CallbackDecoder, Verdict, apply_callback
from penpay.service_layer.flow import Delivery, FlowDeps, Item, Results, unwrap
from penpay.service_layer.handlers import BatchStep, Step, Subscription
from penpay.service_layer.intake import CallbackKind, StoredCallback
from penpay_domain.events import TransactionEvent
from penpay_domain.ids import TransactionId
from penpay_domain.transaction import Transaction

log = get_logger(__name__)

Handler = Callable[[StreamMessage], Awaitable[None]]


class CallbackNotReady(Exception):
    """The callback overtook Daraja's answer to our request; the message is retried shortly."""


def event_handler(
    sub: Subscription, deps: FlowDeps, *, max_batch: int = 32, max_in_flight: int = 1, linger_s: float = 0.0
) -> Handler:
    """The handler of one consumer group. Messages in flight together are handled together: each event name has a
    :class:`MicroBatcher`, whose flush runs the step's batch form (``Subscription.batched``) over the batch, or the
    one-message step for each message at once, and then records every message the steps left unrecorded in one
    unit of work. A batch that fails as a whole is run again one message at a time, so one bad message fails only
    itself. Each message still succeeds or fails on its own: the consumer acknowledges or retries it as before.
    A batch smaller than ``max_batch`` waits up to ``linger_s`` for more (``PENPAY_WORKER_LINGER_MS``)."""
    batchers = {
        name: MicroBatcher[StreamMessage, object](
            partial(_flush, sub, deps, step, sub.batched.get(name)),
            max_batch=max_batch,
            max_in_flight=max_in_flight,
            linger_s=linger_s,
        )
        for name, step in sub.steps.items()
    }

    async def handle(message: StreamMessage) -> None:
        event = message.event
        if event is None:
            raise PoisonMessage("no event in the message")
        batcher = batchers.get(event.name)
        if batcher is None:
            return  # another group's business on a shared stream
        outcome = unwrap(await batcher.submit(message))
        log.info(
            "step_done", step=event.name, group=sub.group, outcome=str(outcome), transaction_id=event.transaction_id
        )

    return handle


async def _flush(
    sub: Subscription, deps: FlowDeps, step: Step, batch_step: BatchStep | None, messages: list[StreamMessage]
) -> Results:
    results: Results = [None] * len(messages)
    deliveries: dict[int, Delivery] = {}
    rounds = _rounds([_txn(m) for m in messages])  # two messages of one transaction never share a batch
    for members in rounds:
        for n, outcome, delivery in await _run_round(
            sub, deps, step=step, batch_step=batch_step, messages=messages, members=members
        ):
            results[n] = outcome
            deliveries[n] = delivery
    unrecorded = [n for n, d in deliveries.items() if not d.recorded and not isinstance(results[n], BaseException)]
    if unrecorded:
        try:
            await with_retries(partial(_mark, deps, sub.group, [messages[n].dedupe_key for n in unrecorded]))
        except Exception as exc:  # the steps are done, but not recorded: their messages come back and find so
            for n in unrecorded:
                results[n] = exc
    return results


def _txn(message: StreamMessage) -> str:
    return message.event.transaction_id if message.event is not None else ""


async def _run_round(
    sub: Subscription,
    deps: FlowDeps,
    *,
    step: Step,
    batch_step: BatchStep | None,
    messages: list[StreamMessage],
    members: list[int],
) -> list[tuple[int, object, Delivery]]:
    async def one(n: int) -> tuple[int, object, Delivery]:
        message = messages[n]
        assert message.event is not None
        event = message.event

        async def attempt() -> tuple[object, Delivery]:
            delivery = Delivery(sub.group, message.dedupe_key)  # fresh per try: a rolled-back record is no record
            if batch_step is not None:
                [outcome] = await batch_step(deps, [Item(TransactionId(event.transaction_id), delivery, event)])
                return outcome, delivery
            return await step(deps, event, delivery=delivery), delivery

        try:
            outcome, delivery = await with_retries(attempt)  # a deadlock is retried at once, not in a minute
        except Exception as exc:
            return n, exc, Delivery(sub.group, message.dedupe_key)
        return n, outcome, delivery

    if batch_step is None or len(members) == 1:
        return list(await asyncio.gather(*(one(n) for n in members)))

    async def attempt_batch() -> tuple[Results, list[Delivery]]:
        fresh = [Delivery(sub.group, messages[n].dedupe_key) for n in members]
        items = [
            Item(TransactionId(_txn(messages[n])), d, messages[n].event) for n, d in zip(members, fresh, strict=True)
        ]
        return await batch_step(deps, items), fresh

    try:
        outcomes, fresh = await with_retries(attempt_batch)
    except Exception as exc:
        log.warning("batch_failed_running_one_by_one", group=sub.group, size=len(members), error=repr(exc))
        return list(await asyncio.gather(*(one(n) for n in members)))
    return [(n, o, d) for n, o, d in zip(members, outcomes, fresh, strict=True)]


async def _mark(deps: FlowDeps, group: str, keys: list[str]) -> None:
    async with deps.uow() as uow:
        await uow.processed.mark_many(group, keys, uow.now)
        await uow.commit()


def callback_handler(
    deps: FlowDeps,
    decoder: CallbackDecoder,
    group: str = "callbacks",
    *,
    max_batch: int = 32,
    max_in_flight: int = 1,
    linger_s: float = 0.0,
    carries: BoundedTasks | None = None,
) -> Handler:
    """Stored callbacks in flight together are applied in one unit of work (callbacks of one transaction in
    separate ones); a batch that fails as a whole (a callback early, a message another consumer is applying too)
    is applied again one callback at a time, as a lone message always is. A batch smaller than ``max_batch`` waits
    up to ``linger_s`` for more, as the event handlers' do.

    The credits of the deposits a batch saw paid are made after its unit of work commits: before its messages are
    answered, or, given ``carries``, in the background, the messages answered at once. The payments and the
    processed marks are committed either way, so an answered message has nothing left to redo; a credit that a
    dead process leaves unfinished is the reconciler's (CREDITING, the same reference). In the background the next
    batch is applied while this one's transfers are on their way to Deriv and back, instead of after them
    (docs/performance.md, round 9: the end of a burst no longer waits on the callbacks); ``carries`` bounds how
    many batches' credits run at once, and holds the next batch's answer back while that many are running."""
    batcher = MicroBatcher[tuple[StreamMessage, int], object](
        partial(_apply_callbacks, deps, decoder, group, carries),
        max_batch=max_batch,
        max_in_flight=max_in_flight,
        linger_s=linger_s,
    )

    async def handle(message: StreamMessage) -> None:
        try:
            callback_id = int(message.fields["callback_id"])
        except (KeyError, ValueError) as exc:
            raise PoisonMessage(f"no callback id in the message: {exc}") from exc
        verdict = unwrap(await batcher.submit((message, callback_id)))
        if verdict is None:
            return
        log.info(
            "callback_applied", callback_id=callback_id, verdict=str(verdict), transaction_id=message.transaction_id
        )

    return handle


class _BatchNotApplied(Exception):
    """A batch of callbacks must be applied one at a time instead."""


@dataclass(slots=True)
class _Credits:
    """The deposits that applying callbacks moved to CREDITING, with the events of the commits that did it: the
    callback worker credits them itself, once the callbacks are applied (``crediting.carry_credits``)."""

    started: list[Transaction] = field(default_factory=list)
    events: list[TransactionEvent] = field(default_factory=list)

    def add(self, other: _Credits) -> None:
        self.started.extend(other.started)
        self.events.extend(other.events)


async def _apply_callbacks(
    deps: FlowDeps,
    decoder: CallbackDecoder,
    group: str,
    carries: BoundedTasks | None,
    batch: list[tuple[StreamMessage, int]],
) -> Results:
    results: Results = [None] * len(batch)
    credits = _Credits()
    for members in _rounds([m.transaction_id or f"callback:{cid}" for m, cid in batch]):
        if len(members) > 1:
            try:
                verdicts, started = await with_retries(
                    partial(_apply_many, deps, decoder, group, [batch[n] for n in members])
                )
            except Exception as exc:
                log.info("callback_batch_one_by_one", size=len(members), reason=repr(exc))
            else:
                credits.add(started)
                for n, verdict in zip(members, verdicts, strict=True):
                    results[n] = verdict
                continue
        for n, (outcome, started) in zip(
            members, await asyncio.gather(*(_apply_one(deps, decoder, group, *batch[n]) for n in members)), strict=True
        ):
            results[n] = outcome
            credits.add(started)
    if not credits.started:
        return results
    if carries is None:
        await crediting.carry_credits(deps, credits.started, credits.events)
    else:
        await carries.start(crediting.carry_credits(deps, credits.started, credits.events))
    return results


async def _apply_many(
    deps: FlowDeps, decoder: CallbackDecoder, group: str, batch: list[tuple[StreamMessage, int]]
) -> tuple[list[Verdict | None], _Credits]:
    async with deps.uow() as uow:
        seen = await uow.processed.seen_many(group, [m.dedupe_key for m, _ in batch])
        # in transaction order, as a batch of steps locks its rows: two batches over the same rows queue, not deadlock
        todo = sorted(
            ((m, cid) for m, cid in batch if m.dedupe_key not in seen), key=lambda mc: mc[0].transaction_id or ""
        )
        if not todo:
            return [None] * len(batch), _Credits()
        stored = await uow.callbacks.get_many([cid for _, cid in todo])
        # the STK callbacks' deposits and the B2C results' withdrawals, each kind found and locked in one statement
        # (each apply_callback then finds its own without a query)
        verified = [s for s in stored.values() if s.callback.verified]  # a forged one locks nothing
        await uow.transactions.find_many_by_checkout_request_ids(
            [c for c in (_checkout_request_id(decoder, s) for s in verified) if c]
        )
        await uow.transactions.find_many_by_conversation_ids(
            [c for c in (_conversation_id(decoder, s) for s in verified) if c]
        )
        verdicts: dict[str, Verdict] = {}
        for message, callback_id in todo:
            if callback_id not in stored:
                raise _BatchNotApplied(f"callback {callback_id} not found")
            verdict = await apply_callback(uow, stored[callback_id], decoder)
            if verdict is Verdict.EARLY:
                raise _BatchNotApplied(f"callback {callback_id} arrived before its STK push was recorded")
            verdicts[message.dedupe_key] = verdict
        if await uow.processed.mark_many(group, list(verdicts), uow.now) != len(verdicts):
            raise _BatchNotApplied("another consumer recorded one of these messages meanwhile")
        applied = [(stored[cid], verdicts[m.dedupe_key]) for m, cid in todo]
        started = await crediting.start_credits(uow, _paid_ids(applied))
        events = await uow.commit(carried=crediting.CARRIED)
    return [verdicts.get(m.dedupe_key) for m, _ in batch], _Credits(started, events)


def _conversation_id(decoder: CallbackDecoder, stored: StoredCallback) -> str | None:
    kind = stored.callback.kind
    if kind not in (CallbackKind.B2C_RESULT, CallbackKind.B2C_TIMEOUT):
        return None
    try:
        return decoder.b2c(kind, stored.callback.body).conversation_id or None
    except ValueError:  # malformed: apply_callback rejects it on its own
        return None


def _checkout_request_id(decoder: CallbackDecoder, stored: StoredCallback) -> str | None:
    if stored.callback.kind is not CallbackKind.STK:
        return None
    try:
        return decoder.stk(stored.callback.body).checkout_request_id
    except ValueError:  # malformed: apply_callback rejects it on its own
        return None


async def _apply_one(
    deps: FlowDeps, decoder: CallbackDecoder, group: str, message: StreamMessage, callback_id: int
) -> tuple[object, _Credits]:
    async def apply_once() -> tuple[Verdict | None, _Credits]:
        async with deps.uow() as uow:
            if not await uow.processed.mark(group, message.dedupe_key, uow.now):
                return None, _Credits()
            stored = await uow.callbacks.get(callback_id)
            verdict = await apply_callback(uow, stored, decoder)
            if verdict is Verdict.EARLY:
                raise CallbackNotReady(f"callback {callback_id} arrived before its STK push was recorded")
            started = await crediting.start_credits(uow, _paid_ids([(stored, verdict)]))
            events = await uow.commit(carried=crediting.CARRIED)
            return verdict, _Credits(started, events)

    try:
        return await with_retries(apply_once)
    except Exception as exc:
        return exc, _Credits()


def _paid_ids(applied: Iterable[tuple[StoredCallback, Verdict]]) -> list[TransactionId]:
    """The deposits that STK callbacks applied just now may have seen paid: an applied callback's transaction is the
    one its token-bound URL names, already loaded (and locked) by the unit of work that applied it."""
    return [
        s.callback.transaction_id
        for s, verdict in applied
        if verdict is Verdict.APPLIED and s.callback.kind is CallbackKind.STK and s.callback.transaction_id
    ]


def _rounds(keys: list[str]) -> list[list[int]]:
    """Positions of ``keys`` grouped into rounds in which no key repeats (one aggregate per unit of work)."""
    rounds: list[tuple[set[str], list[int]]] = []
    for n, key in enumerate(keys):
        for taken, members in rounds:
            if key not in taken:
                taken.add(key)
                members.append(n)
                break
        else:
            rounds.append(({key}, [n]))
    return [members for _, members in rounds]
