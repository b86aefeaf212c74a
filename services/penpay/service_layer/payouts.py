"""Paying shillings out over B2C: a withdrawal's payout and a failed deposit's refund, and settling their results.

The OriginatorConversationID (PenPay's payout id) is fixed and committed before the first request, so any resend
carries the same id and Daraja refuses it as a duplicate instead of paying twice. A queue timeout or a lost answer
is an unknown outcome, settled by the result callback or by Transaction Status, never by resending blindly.
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
    already_processed,
    lock_due,
    record_answers,
    record_processed,
    unwrap,
)
from penpay_domain.ids import PayoutId, TransactionId, new_payout_id
from penpay_domain.ports import UnitOfWork
from penpay_domain.providers import Outcome, PaymentResult, PaymentStatus, PayoutRequestResult
from penpay_domain.transaction import Kind, Status, Transaction

PAYOUT_REMARKS = "PenPay withdrawal"
REFUND_REMARKS = "PenPay refund"


async def pay_out(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """withdrawal.debited: send the withdrawal's shillings to the user's phone."""
    return str(unwrap((await pay_outs(deps, [Item(txn_id, delivery)]))[0]))


async def pay_outs(deps: FlowDeps, items: Sequence[Item]) -> Results:
    """withdrawal.debited for a batch (distinct transactions): one unit of work fixes their payout ids, the B2C
    requests go out together, one unit of work records Daraja's answers. Each item gets "duplicate", "not due",
    "done", "rejected", "unknown", "already settled", or the exception its message ends with."""
    results: Results = ["duplicate"] * len(items)
    at = {id(item): n for n, item in enumerate(items)}
    due: list[tuple[Item, Transaction, PayoutId]] = []
    async with deps.uow() as uow:
        fixed: list[Transaction] = []
        for item, txn in await lock_due(uow, items, results):
            if txn.status is not Status.DEBITED:
                results[at[id(item)]] = "not due"
                continue
            if txn.payout_id is None:
                fixed.append(txn)
            due.append((item, txn, txn.prepare_payout(new_payout_id(uow.now))))
        await uow.transactions.save_many(fixed)  # a payout id is no event: saved explicitly, before any request
        await uow.commit()

    answers = await asyncio.gather(
        *(_send(deps, txn, payout_id, PAYOUT_REMARKS) for _, txn, payout_id in due), return_exceptions=True
    )
    sent: list[tuple[Item, PayoutId, PayoutRequestResult]] = []
    for (item, _, payout_id), answer in zip(due, answers, strict=True):
        if isinstance(answer, BaseException):
            results[at[id(item)]] = answer  # nothing was sent (ProviderUnavailable) or it may have been: retried
        else:
            sent.append((item, payout_id, answer))
    settled = await record_answers(
        deps,
        [(item, (payout_id, result)) for item, payout_id, result in sent],
        expected=Status.DEBITED,
        apply=_apply_payout_answer,
    )
    for item, _, result in sent:
        if item.txn_id in settled:
            results[at[id(item)]] = "already settled"
        else:
            results[at[id(item)]] = "duplicate" if result.duplicate else result.outcome.value
    return results


def _apply_payout_answer(txn: Transaction, answer: tuple[PayoutId, PayoutRequestResult], now: datetime) -> None:
    payout_id, result = answer
    if result.outcome is Outcome.DONE and result.conversation_id:
        txn.payout_accepted(payout_id=payout_id, conversation_id=result.conversation_id, now=now)
    elif result.outcome is Outcome.REJECTED and not result.duplicate:
        txn.fail_payout(code=result.error_code or "b2c_rejected", reason=result.message or "B2C refused", now=now)
    else:  # unknown, or a duplicate of an earlier request that did reach Daraja: its result will tell
        txn.payout_outcome_unknown(now)


async def refund_deposit(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """deposit.credit_rejected: Deriv refused the credit, so the payer gets their shillings back over B2C."""
    async with deps.uow() as uow:
        if await already_processed(uow, delivery):
            return "duplicate"
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is not Status.REFUNDING or txn.b2c_conversation_id is not None:
            return "not due"
        payout_id = txn.prepare_refund(new_payout_id(uow.now))
        await uow.transactions.save(txn)
        await uow.commit()

    result = await _send(deps, txn, payout_id, REFUND_REMARKS)

    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is not Status.REFUNDING:
            return "already settled"
        if result.outcome is Outcome.DONE and result.conversation_id:
            txn.refund_accepted(payout_id=payout_id, conversation_id=result.conversation_id)
        elif result.outcome is Outcome.REJECTED and not result.duplicate:
            txn.flag_for_review(
                reason=f"the refund B2C was refused: {result.error_code} {result.message}".strip(), now=uow.now
            )
        await uow.transactions.save(txn)
        await record_processed(uow, delivery)
        await uow.commit()
    return "duplicate" if result.duplicate else result.outcome.value


async def _send(deps: FlowDeps, txn: Transaction, payout_id: PayoutId, remarks: str) -> PayoutRequestResult:
    result = await deps.mpesa.b2c_payout(
        payout_id=payout_id,
        amount=txn.amount_kes,
        msisdn=txn.parties.msisdn,
        remarks=remarks,
        result_url=deps.callback_urls.b2c_result(txn.id),
        timeout_url=deps.callback_urls.b2c_timeout(txn.id),
    )
    if result.outcome is Outcome.UNAVAILABLE:
        raise ProviderUnavailable(f"Daraja unavailable for the B2C of {txn.id}: {result.message}")
    return result


async def apply_payout_result(uow: UnitOfWork, txn: Transaction, result: PaymentResult) -> str:
    """Apply a B2C result (callback, queue timeout or Transaction Status) to a payout or a refund. Returns what was
    done. The caller has loaded ``txn`` for update and commits."""
    now = uow.now
    if txn.kind is Kind.WITHDRAWAL:
        if txn.status is Status.DEBITED and txn.payout_id is not None:
            txn.payout_outcome_unknown(now)  # the result overtook the request's own answer
        if txn.status is Status.PAYING_OUT:
            if result.status is PaymentStatus.PAID:
                txn.complete_payout(receipt=result.receipt or f"B2C-{txn.payout_id}", now=now)
                return "paid"
            if result.status.is_final_failure:
                txn.fail_payout(code=result.result_code, reason=result.description or result.status.value, now=now)
                return "failed"
            return "pending"
        return "duplicate" if txn.status in (Status.COMPLETED, Status.REVERSING, Status.REVERSED) else "ignored"
    if txn.status is Status.REFUNDING:
        if result.status is PaymentStatus.PAID:
            txn.complete_refund(receipt=result.receipt or f"B2C-{txn.refund_payout_id}", now=now)
            return "paid"
        if result.status.is_final_failure:
            txn.flag_for_review(reason=f"the refund B2C failed: {result.result_code} {result.description}", now=now)
            return "failed"
        return "pending"
    return "duplicate"


async def ask_payout_status(deps: FlowDeps, txn_id: TransactionId) -> str:
    """The reconciler's question for a payout or refund whose result is late: Transaction Status. Its answer comes
    to a URL of its own (a status answer names its query, not the payout, and must never be read as a B2C result)."""
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id)
    payout_id = txn.payout_id if txn.kind is Kind.WITHDRAWAL else txn.refund_payout_id
    if payout_id is None:
        return "not applicable"
    outcome = await deps.mpesa.transaction_status(
        payout_id=payout_id,
        result_url=deps.callback_urls.status_result(txn.id),
        timeout_url=deps.callback_urls.status_timeout(txn.id),
    )
    if outcome is Outcome.UNAVAILABLE:
        raise ProviderUnavailable(f"Daraja unavailable for the status of {txn_id}")
    return outcome.value
