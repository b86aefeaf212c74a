"""Collecting a deposit's shillings: the STK push, and settling what M-Pesa says became of it.

A push is sent at most once per deposit (``request_stk_push`` is committed before the POST). If Daraja's answer is
lost the deposit waits in AWAITING_PAYMENT for the callback, whose URL names the transaction; a query never
downgrades a recorded success, and a success that arrives after a recorded failure is kept in suspense for review,
never dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from penpay.service_layer.flow import (
    Delivery,
    FlowDeps,
    Item,
    ProviderUnavailable,
    Results,
    lock_due,
    record_all_processed,
    unwrap,
)
from penpay_domain import ledger
from penpay_domain.errors import InvalidAmount
from penpay_domain.ids import TransactionId
from penpay_domain.money import Money
from penpay_domain.ports import UnitOfWork
from penpay_domain.providers import Outcome, PaymentResult, PaymentStatus, StkPushResult
from penpay_domain.transaction import Kind, Status, Transaction


async def push_stk(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> None:
    """deposit.requested: ask the payer's phone for the PIN."""
    unwrap((await push_stk_many(deps, [Item(txn_id, delivery)]))[0])


async def push_stk_many(deps: FlowDeps, items: Sequence[Item]) -> Results:
    """deposit.requested for a batch of deposits (distinct transactions): Daraja's access token in hand first, then
    one unit of work records every push's intent, the pushes go out together, one unit of work records Daraja's
    answers. Each item gets None, or the exception its message ends with (ProviderUnavailable: nothing reached
    Daraja, push again). The token comes first because an intent recorded and not followed by its request (the
    process dies in between) is a deposit no one can know was never pushed: it is never pushed again, and waits for a
    human; asking for the token in that gap made it as long as a round trip to Daraja."""
    if not await deps.mpesa.ready():  # before any intent is recorded: a crash then leaves nothing half-done
        refusal = "Daraja cannot be asked now (no access token): nothing recorded, nothing sent"
        return [ProviderUnavailable(refusal) for _ in items]  # one each: each message raises its own
    results: Results = [None] * len(items)
    at = {id(item): n for n, item in enumerate(items)}
    due: list[tuple[Item, Transaction]] = []
    async with deps.uow() as uow:
        for item, txn in await lock_due(uow, items, results):
            if txn.status is Status.PENDING and txn.stk_requested_at is None:
                txn.request_stk_push(uow.now)
                due.append((item, txn))
            # else: already pushed (or its outcome is being settled): never push twice
        await uow.transactions.save_many([txn for _, txn in due])
        await uow.commit()
    if not due:
        return results

    answers = await asyncio.gather(
        *(
            deps.mpesa.stk_push(
                txn_id=txn.id,
                amount=txn.amount_kes,
                msisdn=txn.parties.msisdn,
                callback_url=deps.callback_urls.stk(txn.id),
            )
            for _, txn in due
        ),
        return_exceptions=True,
    )
    answered = [(item, a) for (item, _), a in zip(due, answers, strict=True) if not isinstance(a, BaseException)]
    for (item, _), answer in zip(due, answers, strict=True):
        if isinstance(answer, BaseException):
            results[at[id(item)]] = answer  # sent or not, unknown: the message comes back and finds it requested
        elif answer.outcome is Outcome.UNAVAILABLE:
            results[at[id(item)]] = ProviderUnavailable(
                f"Daraja unavailable for the STK push of {item.txn_id}: {answer.message}"
            )

    async def record() -> None:
        async with deps.uow() as uow:
            fresh = await uow.transactions.get_many([item.txn_id for item, _ in answered], for_update=True)
            for item, answer in answered:
                _apply_push_answer(fresh[item.txn_id], answer, uow.now)
            await uow.transactions.save_many([fresh[item.txn_id] for item, _ in answered])
            # an unavailable push raises for its message, which comes back: not recorded
            await record_all_processed(uow, [i.delivery for i, a in answered if a.outcome is not Outcome.UNAVAILABLE])
            await uow.commit()

    if answered:
        await deps.retry(record)
    return results


def _apply_push_answer(txn: Transaction, result: StkPushResult, now: datetime) -> None:
    if txn.status is Status.PENDING:
        if result.outcome is Outcome.DONE and result.checkout_request_id:
            txn.stk_push_accepted(result.checkout_request_id, now)
        elif result.outcome is Outcome.REJECTED:
            txn.fail_payment(
                code=result.error_code or "stk_push_rejected", reason=result.message or "STK push refused", now=now
            )
        elif result.outcome is Outcome.UNAVAILABLE:
            txn.stk_requested_at = None  # nothing reached Daraja: the push may be sent again
        else:
            txn.stk_push_outcome_unknown(now)
    elif result.checkout_request_id and txn.mpesa_checkout_request_id is None:
        txn.mpesa_checkout_request_id = result.checkout_request_id  # the callback overtook the answer


async def settle_stk_result(uow: UnitOfWork, txn: Transaction, result: PaymentResult, *, from_query: bool) -> str:
    """Apply what a callback (or an STK Push Query) says about a deposit's payment. Returns what was done, for the
    audit trail: "paid", "failed", "duplicate", "receipt recorded", "late success", "amount mismatch", "pending".

    The caller has loaded ``txn`` for update and commits.
    """
    if txn.kind is not Kind.DEPOSIT:
        return "not a deposit"
    now = uow.now
    if result.status is PaymentStatus.PAID:
        if txn.status is Status.AWAITING_PAYMENT:
            if result.amount is not None and result.amount != txn.amount_kes:
                txn.flag_for_review(reason=f"paid {result.amount}, expected {txn.amount_kes}", now=now)
                await _hold_in_suspense(uow, txn, result, "amount-mismatch")
                return "amount mismatch"
            if from_query or not result.receipt:
                txn.confirm_payment_by_query(now)  # the receipt is recorded when the callback arrives
            else:
                txn.confirm_payment(receipt=result.receipt, amount=txn.amount_kes, now=now)
            return "paid"
        if txn.status is Status.PAYMENT_FAILED:
            await _hold_in_suspense(uow, txn, result, "late-success")
            return "late success"
        if result.receipt and not from_query and txn.record_receipt(result.receipt):
            return "receipt recorded"
        return "duplicate"
    if result.status.is_final_failure:
        if txn.status is Status.AWAITING_PAYMENT:
            txn.fail_payment(code=result.result_code, reason=result.description or result.status.value, now=now)
            return "failed"
        return "duplicate"
    return "pending"


async def _hold_in_suspense(uow: UnitOfWork, txn: Transaction, result: PaymentResult, why: str) -> None:
    """Money M-Pesa says it collected that no live deposit can take: book it to suspense, for a human."""
    amount = result.amount or txn.amount_kes
    if not isinstance(amount, Money) or not amount.is_positive:
        raise InvalidAmount("a suspense booking needs a positive amount")
    transfer = ledger.posted(
        f"{txn.id}:{why}",
        ledger.Posting(ledger.MPESA_COLLECTIONS.code, ledger.SUSPENSE_KES.code, amount),
        transaction_id=None,
        memo=f"{why} {result.receipt or ''}".strip(),
    )
    if await uow.ledger.apply(transfer):
        await uow.audit.append(
            actor="worker",
            action=f"mpesa.{why}",
            subject=txn.id,
            payload={"receipt": result.receipt, "amount": amount.minor, "status": txn.status.value},
            now=uow.now,
        )


async def query_stk(deps: FlowDeps, txn_id: TransactionId) -> str:
    """The reconciler's question for a deposit whose callback is late: what does STK Push Query say?"""
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id)
    if txn.status is not Status.AWAITING_PAYMENT or not txn.mpesa_checkout_request_id:
        return "not applicable"
    result = await deps.mpesa.stk_query(checkout_request_id=txn.mpesa_checkout_request_id)
    if result.status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        return result.status.value
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        done = await settle_stk_result(uow, txn, result, from_query=True)
        await uow.transactions.save(txn)
        await uow.commit()
    return done
