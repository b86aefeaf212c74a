"""Moving dollars with the Deriv gateway: crediting a paid deposit, and giving a withdrawal's dollars back.

The gateway executes each reference at most once (it records the reference before sending and settles an
interrupted attempt from Deriv's statement), so re-running a step with the same reference is always safe; an UNKNOWN
answer leaves the status as it is for the reconciler to ask again.
"""

from __future__ import annotations

from penpay.service_layer.flow import Delivery, FlowDeps, ProviderUnavailable, already_processed, record_processed
from penpay_domain.ids import TransactionId
from penpay_domain.providers import DerivTransferResult, Outcome
from penpay_domain.transaction import Status


def reversal_reference(txn_id: TransactionId) -> str:
    return f"{txn_id}-reversal"


async def credit_deposit(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """deposit.payment_received: paymentagent_transfer of the deposit's USD to the client's account."""
    async with deps.uow() as uow:
        if await already_processed(uow, delivery):
            return "duplicate"
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is Status.PAYMENT_RECEIVED:
            txn.start_credit(uow.now)
            await uow.transactions.save(txn)
            await uow.commit()
        elif txn.status is not Status.CREDITING:
            return "not due"

    result = await deps.deriv.transfer(reference=txn.id, loginid=txn.parties.deriv_loginid, amount=txn.amount_usd)
    return await _record(deps, txn_id, Status.CREDITING, result, delivery)


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
    if result.outcome is Outcome.UNAVAILABLE:
        raise ProviderUnavailable(f"Deriv gateway unavailable for {txn_id}: {result.message}")
    if result.outcome is Outcome.UNKNOWN:
        return "unknown"  # the reconciler asks again with the same reference
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is not expected:
            return "already settled"
        if result.outcome is Outcome.DONE:
            deriv_id = result.deriv_transaction_id or ""
            if expected is Status.CREDITING:
                txn.complete_credit(deriv_transaction_id=deriv_id, now=uow.now)
            else:
                txn.complete_reversal(deriv_transaction_id=deriv_id, now=uow.now)
        elif expected is Status.CREDITING:
            txn.reject_credit(
                code=result.error_code or "deriv_rejected",
                reason=result.message or "Deriv refused the transfer",
                now=uow.now,
            )
        else:
            txn.flag_for_review(
                reason=f"Deriv refused the reversal: {result.error_code} {result.message}".strip(), now=uow.now
            )
        await uow.transactions.save(txn)
        await record_processed(uow, delivery)
        await uow.commit()
    return result.outcome.value
