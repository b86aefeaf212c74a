"""What the workers' use cases share: their dependencies, and how a step says "try me again later".

Every step is re-entrant: it loads the transaction under a row lock, does nothing unless the status says the step is
due, records its intent before any external effect, calls the provider, and records the answer in a second unit of
work. A crash at any line leaves a status from which running the same step again (a redelivered message, or the
reconciler) finishes the job or settles an unknown outcome with the provider first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from penpay.service_layer.intake import IntakeUnitOfWork
from penpay_domain.errors import DomainError, NotFound
from penpay_domain.events import TransactionEvent
from penpay_domain.ids import TransactionId
from penpay_domain.ports import Clock, DerivGateway, Mailer, Mpesa, UnitOfWork
from penpay_domain.transaction import Status, Transaction


class CallbackUrls(Protocol):
    """The URLs handed to Daraja; each carries the transaction id and a token bound to it."""

    def stk(self, txn_id: TransactionId) -> str: ...
    def b2c_result(self, txn_id: TransactionId) -> str: ...
    def b2c_timeout(self, txn_id: TransactionId) -> str: ...
    def status_result(self, txn_id: TransactionId) -> str: ...
    def status_timeout(self, txn_id: TransactionId) -> str: ...


class ProviderUnavailable(DomainError):
    """Nothing was sent (provider or gateway down, throttled): the step is retried later, with backoff."""

    code = "provider_unavailable"


T = TypeVar("T")


class Publish(Protocol):
    """Puts committed events on their streams now; never raises (a failure is logged, and the outbox relay or the
    reconciler catches up)."""

    async def __call__(self, events: Sequence[TransactionEvent]) -> object: ...


class Retry(Protocol):
    """Runs a whole unit of work again after a transient database failure (a deadlock, a lock-wait timeout)."""

    async def __call__(self, attempt: Callable[[], Awaitable[T]]) -> T: ...


async def run_once(attempt: Callable[[], Awaitable[T]]) -> T:
    return await attempt()


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowDeps:
    uow: Callable[[], IntakeUnitOfWork]
    mpesa: Mpesa
    deriv: DerivGateway
    mailer: Mailer
    clock: Clock
    callback_urls: CallbackUrls
    # how a step that carried an event on itself (``UnitOfWork.commit(carried=...)``) and could not finish it hands
    # the event to its stream's consumers after all
    publish: Publish
    reconcile_after: timedelta = timedelta(seconds=30)
    ops_email: str = ""
    # how a step re-runs the unit of work that records a provider's answer (the answer is in hand: running the
    # whole step again would find the intent recorded and never record it)
    retry: Retry = run_once

    @property
    def give_up_after(self) -> timedelta:
        """How long an outcome may stay unknown, re-asked every sweep, before a human is asked to decide."""
        return self.reconcile_after * 20


@dataclass(slots=True)
class Delivery:
    """The stream message a step runs for (its consumer group and dedupe key), so the step deduplicates it in its
    own units of work rather than in two more: :func:`already_processed` in its first one, before anything is
    decided, and :func:`record_processed` in the one that concludes it, in the same commit as the step's answer.
    A step that ends another way (nothing due, an outcome left unknown for the reconciler) leaves ``recorded``
    False and the caller records the message afterwards; a step that raises records nothing, so the message is
    delivered again. The reconciler runs steps without one."""

    group: str
    key: str
    recorded: bool = field(default=False)

    def needs_no_record(self) -> None:
        """The step did nothing a second delivery could repeat (no e-mail to send): the message is done without a
        record, so it costs no write and no commit; a redelivery finds the same and does the same nothing."""
        self.recorded = True


@dataclass(frozen=True, slots=True)
class Item:
    """One transaction's turn in a batch of steps: the transaction and the message it runs for (None: the
    reconciler)."""

    txn_id: TransactionId
    delivery: Delivery | None = None
    event: TransactionEvent | None = None  # the message's event, for steps that depend on more than its name


Results = list[object]  # one per item, in order: the step's outcome, or the exception that item ends with


def unwrap(result: object) -> object:
    """A batch-of-one's result as the one-transaction form of a step returns it: its exception raised."""
    if isinstance(result, BaseException):
        raise result
    return result


async def skip_processed(uow: UnitOfWork, items: Sequence[Item]) -> list[Item]:
    """The batch's form of :func:`already_processed`: the items still to do (one query per consumer group); the
    others are marked as recorded."""
    todo: list[Item] = []
    by_group: dict[str, list[Item]] = {}
    for item in items:
        if item.delivery is None:
            todo.append(item)
        else:
            by_group.setdefault(item.delivery.group, []).append(item)
    for group, members in by_group.items():
        seen = await uow.processed.seen_many(group, [m.delivery.key for m in members if m.delivery is not None])
        for m in members:
            if m.delivery is not None and m.delivery.key in seen:
                m.delivery.recorded = True
            else:
                todo.append(m)
    return todo


async def lock_due(uow: UnitOfWork, items: Sequence[Item], results: Results) -> list[tuple[Item, Transaction]]:
    """A batch step's first move: the items whose message is still to do, with their transactions loaded under row
    locks (in id order). An item whose transaction does not exist gets NotFound in ``results`` (its own message
    fails, the others go on)."""
    at = {id(item): n for n, item in enumerate(items)}
    todo = await skip_processed(uow, items)
    txns = await uow.transactions.get_many([item.txn_id for item in todo], for_update=True)
    found: list[tuple[Item, Transaction]] = []
    for item in todo:
        txn = txns.get(item.txn_id)
        if txn is None:
            results[at[id(item)]] = NotFound(f"transaction {item.txn_id} not found")
        else:
            found.append((item, txn))
    return found


async def record_all_processed(uow: UnitOfWork, deliveries: Iterable[Delivery | None]) -> None:
    """The batch's form of :func:`record_processed` (one statement per consumer group)."""
    by_group: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        if delivery is not None and not delivery.recorded:
            by_group.setdefault(delivery.group, []).append(delivery)
    for group, members in by_group.items():
        await uow.processed.mark_many(group, [d.key for d in members], uow.now)
        for d in members:
            d.recorded = True


A = TypeVar("A")


async def record_answers(
    deps: FlowDeps,
    answers: Sequence[tuple[Item, A]],
    *,
    expected: Status,
    apply: Callable[[Transaction, A, datetime], None],
    finish: Callable[[IntakeUnitOfWork, list[TransactionId]], Awaitable[None]] | None = None,
) -> set[TransactionId]:
    """A batch step's last move: the providers' answers recorded in one unit of work, each applied (``apply``) to its
    transaction if that is still ``expected``, the items' messages recorded in the same commit. The unit of work is
    re-run on a deadlock (``deps.retry``): the answers are in hand, and running the whole step again would find the
    intent recorded and never record them. ``finish`` runs in the same unit of work, on the transactions the answers
    were applied to. Returns the transactions that had moved on meanwhile (settled by someone else: their messages
    are left unrecorded, and nothing is applied)."""
    settled: set[TransactionId] = set()

    async def record() -> None:
        settled.clear()
        async with deps.uow() as uow:
            txns = await uow.transactions.get_many([item.txn_id for item, _ in answers], for_update=True)
            for item, answer in answers:
                txn = txns[item.txn_id]
                if txn.status is not expected:
                    settled.add(txn.id)
                else:
                    apply(txn, answer, uow.now)
            applied = [txns[i.txn_id] for i, _ in answers if i.txn_id not in settled]
            await uow.transactions.save_many(applied)
            await record_all_processed(uow, [item.delivery for item, _ in answers if item.txn_id not in settled])
            if finish is not None:
                await finish(uow, [t.id for t in applied])
            await uow.commit()

    if answers:
        await deps.retry(record)
    return settled


async def already_processed(uow: UnitOfWork, delivery: Delivery | None) -> bool:
    """True if the delivery's group has processed this message already (the step then does nothing)."""
    if delivery is None or not await uow.processed.seen(delivery.group, delivery.key):
        return False
    delivery.recorded = True
    return True


async def record_processed(uow: UnitOfWork, delivery: Delivery | None) -> None:
    """Record the message as processed in ``uow``; call it right before the commit that concludes the step."""
    if delivery is not None:
        await uow.processed.mark(delivery.group, delivery.key, uow.now)
        delivery.recorded = True
