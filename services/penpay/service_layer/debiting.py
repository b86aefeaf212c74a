"""Taking a withdrawal's dollars from the client's Deriv account (paymentagent_withdraw through the gateway).

The verification code the user typed is single-use and secret: it is taken from storage in the same database
transaction that marks the withdrawal DEBITING, held only in memory for the call, and never logged. If a crash loses
it before Deriv answered, the gateway is asked whether the reference went through; if it did not, the withdrawal
fails cleanly (nothing moved) and the user asks for a new code.
"""

from __future__ import annotations

from penpay.service_layer.flow import Delivery, FlowDeps, ProviderUnavailable, already_processed, record_processed
from penpay_domain.ids import TransactionId
from penpay_domain.providers import DerivTransferResult, Outcome
from penpay_domain.transaction import Status


async def debit_withdrawal(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """withdrawal.requested (and the reconciler for DEBITING): debit the client's Deriv account."""
    async with deps.uow() as uow:
        if await already_processed(uow, delivery):
            return "duplicate"
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status not in (Status.PENDING, Status.DEBITING):
            return "not due"
        code = await uow.withdrawal_codes.take(txn.id)
        linked = await uow.linked_accounts.get(txn.parties.user_id, txn.parties.deriv_loginid)
        if txn.status is Status.PENDING:
            if linked is None or code is None:
                why = "the Deriv account is no longer linked" if linked is None else "no verification code"
                txn.reject_debit(code="withdrawal_not_authorised", reason=why, now=uow.now)
                await uow.transactions.save(txn)
                await record_processed(uow, delivery)
                await uow.commit()
                return "failed"
            txn.start_debit(uow.now)
            await uow.transactions.save(txn)
        await uow.commit()

    if code is None or linked is None:
        result = await deps.deriv.find_transfer(reference=txn.id)  # a retry after the code was used up
        if result.outcome is Outcome.REJECTED and result.error_code == "NotFound":
            stale = deps.clock.now() - txn.updated_at >= deps.reconcile_after
            if not stale:
                return "unknown"  # an attempt may still be in flight at the gateway
            result = DerivTransferResult(
                outcome=Outcome.REJECTED,
                error_code="verification_code_used",
                message="the withdrawal did not reach Deriv and its verification code is spent; request a new one",
            )
    else:
        result = await deps.deriv.withdraw(
            reference=txn.id,
            loginid=txn.parties.deriv_loginid,
            token_ciphertext=linked.token_ciphertext,
            amount=txn.amount_usd,
            verification_code=code,
        )

    if result.outcome is Outcome.UNAVAILABLE:
        raise ProviderUnavailable(f"Deriv gateway unavailable for {txn_id}: {result.message}")
    if result.outcome is Outcome.UNKNOWN:
        return "unknown"
    async with deps.uow() as uow:
        txn = await uow.transactions.get(txn_id, for_update=True)
        if txn.status is not Status.DEBITING:
            return "already settled"
        if result.outcome is Outcome.DONE:
            txn.complete_debit(deriv_transaction_id=result.deriv_transaction_id or "", now=uow.now)
        else:
            txn.reject_debit(
                code=result.error_code or "deriv_rejected",
                reason=result.message or "Deriv refused the withdrawal",
                now=uow.now,
            )
        await uow.transactions.save(txn)
        await record_processed(uow, delivery)
        await uow.commit()
    return result.outcome.value
