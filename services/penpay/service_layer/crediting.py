"""Moving dollars with the Deriv gateway: crediting a paid deposit, and giving a withdrawal's dollars back.

The gateway executes each reference at most once (it records the reference before sending and settles an
interrupted attempt from Deriv's statement), so re-running a step with the same reference is always safe; an UNKNOWN
answer leaves the status as it is for the reconciler to ask again.

The step that sees a deposit paid (the callback worker applying an STK callback) credits it itself: in the unit of
work that records the payment it also moves the deposit to CREDITING (:func:`start_credits`) and carries the
``deposit.payment_received`` event on itself (``UnitOfWork.commit(carried=CARRIED)``: written to the outbox as
published, not sent to the ``deriv`` consumers), then makes the transfers and records their answers
(:func:`carry_credits`), as ``credit_deposits`` would have after one more stream hop. Where it cannot finish (the
gateway unreachable, a database failure), it publishes the event after all and the ``deriv`` consumers retry it from
CREDITING; if the process dies first, the reconciler finds the deposit CREDITING and credits it (same reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

from penpay.logging import get_logger
from penpay.service_layer.flow import (
    Delivery,
    FlowDeps,
    Item,
    ProviderUnavailable,
    Results,
    already_processed,
    lock_due,
    record_answers,
    unwrap,
)
from penpay_domain import events as ev
from penpay_domain.ids import TransactionId
from penpay_domain.ports import UnitOfWork
from penpay_domain.providers import DerivTransferOrder, DerivTransferResult, Outcome
from penpay_domain.transaction import Kind, Status, Transaction

log = get_logger(__name__)

CARRIED = frozenset({ev.DepositPaymentReceived.name})  # what the step that saw the payment carries on itself


def reversal_reference(txn_id: TransactionId) -> str:
    return f"{txn_id}-reversal"


async def credit_deposit(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """deposit.payment_received: paymentagent_transfer of the deposit's USD to the client's account."""
    return str(unwrap((await credit_deposits(deps, [Item(txn_id, delivery)]))[0]))


async def credit_deposits(deps: FlowDeps, items: Sequence[Item]) -> Results:
    """deposit.payment_received for a batch of deposits (distinct transactions): one unit of work moves them to
    CREDITING, the transfers go to the gateway together, one unit of work records their answers. Each item gets
    "duplicate", "not due", "done", "rejected", "unknown", "already settled", or the exception its message ends
    with."""
    results: Results = ["duplicate"] * len(items)
    at = {id(item): n for n, item in enumerate(items)}
    due: list[tuple[Item, Transaction]] = []
    async with deps.uow() as uow:
        for item, txn in await lock_due(uow, items, results):
            if txn.status is Status.PAYMENT_RECEIVED:
                txn.start_credit(uow.now)
            elif txn.status is not Status.CREDITING:
                results[at[id(item)]] = "not due"
                continue
            due.append((item, txn))
        await uow.commit()  # saves those that moved to CREDITING
    answers = await _transfers(deps, [t for _, t in due])
    recorded = await _record_many(
        deps, Status.CREDITING, [(item, a) for (item, _), a in zip(due, answers, strict=True)]
    )
    for (item, _), outcome in zip(due, recorded, strict=True):
        results[at[id(item)]] = outcome
    return results


async def _transfers(deps: FlowDeps, txns: Sequence[Transaction]) -> Sequence[DerivTransferResult | BaseException]:
    """The deposits' credits, made together (one call to the gateway): each its USD to its Deriv account, under its
    own id as the reference; each answered on its own (the answer, or the exception its message ends with)."""
    if not txns:
        return []
    orders = [DerivTransferOrder(reference=t.id, loginid=t.parties.deriv_loginid, amount=t.amount_usd) for t in txns]
    try:
        return await deps.deriv.transfer_many(orders)
    except Exception as exc:  # the whole call failed before any answer: each message ends with it
        return [exc] * len(txns)


async def start_credits(uow: UnitOfWork, txn_ids: Sequence[TransactionId]) -> list[Transaction]:
    """Of the transactions ``uow`` holds among ``txn_ids``, the deposits it has just seen paid (their
    ``deposit.payment_received`` is still to be committed), moved on to CREDITING in the same unit of work. The caller
    commits with ``carried=CARRIED`` and then hands them to :func:`carry_credits`."""
    # the aggregates the unit of work already holds (locked by the caller's own reads): no statement for them
    held = await uow.transactions.get_many(list(dict.fromkeys(txn_ids)))
    started: list[Transaction] = []
    for txn in held.values():
        if (
            txn.kind is Kind.DEPOSIT
            and txn.status is Status.PAYMENT_RECEIVED
            and any(e.name == ev.DepositPaymentReceived.name for e in txn.events)
        ):
            txn.start_credit(uow.now)
            started.append(txn)
    return started


async def carry_credits(
    deps: FlowDeps, started: Sequence[Transaction], events: Sequence[ev.TransactionEvent]
) -> Results:
    """The transfers of deposits :func:`start_credits` moved to CREDITING, made together, their answers recorded in
    one unit of work. ``events`` are the committed events of that unit of work: a deposit that does not end DONE,
    REJECTED or UNKNOWN here gets its ``deposit.payment_received`` published after all, for the ``deriv`` consumers
    to retry. Never raises: the payment is recorded whatever happens to the credit."""
    if not started:
        return []
    carried = {e.transaction_id: e for e in events if e.name in CARRIED}
    try:
        answers = await _transfers(deps, started)
        results = await _record_many(
            deps, Status.CREDITING, [(Item(t.id), a) for t, a in zip(started, answers, strict=True)]
        )
    except Exception as exc:  # the answers are not recorded: the deriv consumers credit again (same references)
        log.warning("carried_credits_not_recorded", count=len(started), error=repr(exc))
        results = [exc] * len(started)
    failed = [r for r in results if isinstance(r, BaseException)]
    unfinished = [
        carried[t.id] for t, r in zip(started, results, strict=True) if isinstance(r, BaseException) and t.id in carried
    ]
    if unfinished:
        log.info("carried_credits_handed_on", count=len(unfinished), first_reason=repr(failed[0]))
        await deps.publish(unfinished)
    return results


async def reverse_withdrawal(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """withdrawal.payout_failed: the B2C payout failed after Deriv was debited; transfer the dollars back."""
    async with deps.uow() as uow:
        if await already_processed(uow, delivery):
            return "duplicate"
        txn = await uow.transactions.get(txn_id)
    if txn.status is not Status.REVERSING:
        return "not due"
    result = await deps.deriv.transfer(
        reference=reversal_reference(txn.id), loginid=txn.parties.deriv_loginid, amount=txn.amount_usd
    )
    return await _record(deps, txn_id, Status.REVERSING, result, delivery)


async def _record(
    deps: FlowDeps, txn_id: TransactionId, expected: Status, result: DerivTransferResult, delivery: Delivery | None
) -> str:
    return str(unwrap((await _record_many(deps, expected, [(Item(txn_id, delivery), result)]))[0]))


async def _record_many(
    deps: FlowDeps, expected: Status, answers: Sequence[tuple[Item, DerivTransferResult | BaseException]]
) -> Results:
    """Record the gateway's answers in one unit of work (re-run on a deadlock: the answers are in hand)."""
    results: Results = []
    final: list[tuple[Item, DerivTransferResult]] = []
    for item, result in answers:
        if isinstance(result, BaseException):
            results.append(result)  # the message comes back; the gateway deduplicates the reference
        elif result.outcome is Outcome.UNAVAILABLE:
            results.append(ProviderUnavailable(f"Deriv gateway unavailable for {item.txn_id}: {result.message}"))
        elif result.outcome is Outcome.UNKNOWN:
            results.append("unknown")  # the reconciler asks again with the same reference
        else:
            results.append(result.outcome.value)
            final.append((item, result))
    settled = await record_answers(deps, final, expected=expected, apply=partial(_apply_transfer_answer, expected))
    return [
        "already settled" if isinstance(r, str) and item.txn_id in settled and r in _FINAL else r
        for (item, _), r in zip(answers, results, strict=True)
    ]


_FINAL = frozenset({Outcome.DONE.value, Outcome.REJECTED.value})


def _apply_transfer_answer(expected: Status, txn: Transaction, result: DerivTransferResult, now: datetime) -> None:
    if result.outcome is Outcome.DONE:
        deriv_id = result.deriv_transaction_id or ""
        if expected is Status.CREDITING:
            txn.complete_credit(deriv_transaction_id=deriv_id, now=now)
        else:
            txn.complete_reversal(deriv_transaction_id=deriv_id, now=now)
    elif expected is Status.CREDITING:
        txn.reject_credit(
            code=result.error_code or "deriv_rejected", reason=result.message or "Deriv refused the transfer", now=now
        )
    else:
        txn.flag_for_review(reason=f"Deriv refused the reversal: {result.error_code} {result.message}".strip(), now=now)
