"""The reconciler: a periodic sweep that re-drives every transaction left waiting too long.

Each waiting status has one question to ask or one step to re-run, and every one of those is safe to repeat:

| status (stale)                      | what the sweep does                                               |
|-------------------------------------|-------------------------------------------------------------------|
| PENDING deposit, never pushed       | run the STK push step (its message was lost)                      |
| PENDING deposit, push outcome lost  | treat as sent: wait for the callback in AWAITING_PAYMENT          |
| AWAITING_PAYMENT with CheckoutReqID | STK Push Query                                                    |
| PAYMENT_RECEIVED / CREDITING        | the Deriv credit again, same reference (the gateway dedupes)      |
| REFUNDING                           | send the refund (same payout id) or ask Transaction Status        |
| PENDING / DEBITING withdrawal       | the Deriv debit again (or look the reference up)                  |
| DEBITED                             | the payout again (same payout id: a duplicate is refused)         |
| PAYING_OUT                          | Transaction Status                                                |
| REVERSING                           | the reversal transfer again, same reference                       |

An outcome still unknown after ``give_up_after`` goes to NEEDS_REVIEW, reservations kept, for a human.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from penpay.logging import get_logger
from penpay.service_layer import collection, crediting, debiting, payouts
from penpay.service_layer.flow import FlowDeps, ProviderUnavailable
from penpay_domain.ids import TransactionId
from penpay_domain.transaction import Kind, Status, Transaction

log = get_logger(__name__)

WAITING = (
    Status.PENDING,
    Status.AWAITING_PAYMENT,
    Status.PAYMENT_RECEIVED,
    Status.CREDITING,
    Status.REFUNDING,
    Status.DEBITING,
    Status.DEBITED,
    Status.PAYING_OUT,
    Status.REVERSING,
)


async def sweep(deps: FlowDeps, *, limit: int = 200) -> Counter[str]:
    """One pass over stale transactions; returns a count of what was done (for logs and tests)."""
    now = deps.clock.now()
    async with deps.uow() as uow:
        stale = await uow.transactions.list_by_status(WAITING, updated_before=now - deps.reconcile_after, limit=limit)
    done: Counter[str] = Counter()
    for txn in stale:
        try:
            if now - txn.updated_at >= deps.give_up_after and txn.status is not Status.PENDING:
                done[await _give_up(deps, txn.id)] += 1
                continue
            done[await _step_for(txn)(deps, txn.id)] += 1
        except ProviderUnavailable as exc:
            log.warning("reconcile_provider_unavailable", transaction_id=txn.id, error=str(exc))
            done["unavailable"] += 1
    return done


def _step_for(txn: Transaction) -> Callable[[FlowDeps, TransactionId], Awaitable[str]]:
    if txn.kind is Kind.DEPOSIT:
        if txn.status is Status.PENDING:
            return _push_or_wait if txn.stk_requested_at is not None else _push
        if txn.status is Status.AWAITING_PAYMENT:
            return collection.query_stk
        if txn.status is Status.REFUNDING:
            return payouts.ask_payout_status if txn.b2c_conversation_id else payouts.refund_deposit
        return crediting.credit_deposit
    if txn.status in (Status.PENDING, Status.DEBITING):
        return debiting.debit_withdrawal
    if txn.status is Status.DEBITED:
        return payouts.pay_out
    if txn.status is Status.PAYING_OUT:
        return payouts.ask_payout_status
    return crediting.reverse_withdrawal


async def _push(deps: FlowDeps, txn_id: TransactionId) -> str:
    await collection.push_stk(deps, txn_id)
    return "pushed"


async def _push_or_wait(deps: FlowDeps, txn_id: TransactionId) -> str:
    """A push was recorded as sent but its answer never recorded (a crash in between): it may have reached the
    phone, so never push again; wait for the callback as if Daraja's answer had been lost."""
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is not Status.PENDING:
            return "not due"
        txn.stk_push_outcome_unknown(uow.now)
        await uow.transactions.save(txn)
        await uow.commit()
    return "awaiting callback"


async def _give_up(deps: FlowDeps, txn_id: TransactionId) -> str:
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status not in WAITING:
            return "not due"
        txn.flag_for_review(
            reason=f"no final answer from the provider after {deps.give_up_after} in {txn.status.value}", now=uow.now
        )
        await uow.transactions.save(txn)
        await uow.commit()
    return "needs review"
