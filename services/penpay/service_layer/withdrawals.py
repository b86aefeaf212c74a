"""Withdrawal initiation: the same shape as a deposit, with the B2C float.

The login id must be one the user linked (``POST /deriv/link``): the Deriv debit runs with the user's own token.
The pending ``kes`` leg credits ``mpesa:disbursements`` at creation, which reserves the B2C float (the account
refuses what its available balance cannot cover). Limits count the gross KES value (payout plus fee) at the locked
rate. The e-mailed verification code is kept encrypted for the worker, which uses it once.
"""

from __future__ import annotations

from penpay.service_layer.deposits import ACCEPTED, DepositPolicy, FloatUnavailable, Render
from penpay.service_layer.intake import IntakeUnitOfWork
from penpay.service_layer.publishing import publish_quietly
from penpay_domain.commands import InitiateWithdrawal
from penpay_domain.errors import DomainError, InsufficientFunds
from penpay_domain.ids import DerivLoginId, new_transaction_id
from penpay_domain.limits import day_window
from penpay_domain.ports import EventPublisher, FxQuotes
from penpay_domain.transaction import Kind, Parties, Transaction

WithdrawalPolicy = DepositPolicy


class AccountNotLinked(DomainError):
    """A withdrawal (or a code request) for a Deriv account that this user has not linked."""

    code = "deriv_account_not_linked"


def unlinked_message(loginid: DerivLoginId) -> str:
    return f"Deriv account {loginid} is not linked to you; link it with POST /deriv/link first"


async def initiate_withdrawal(
    cmd: InitiateWithdrawal,
    *,
    uow: IntakeUnitOfWork,
    fx: FxQuotes,
    policy: WithdrawalPolicy,
    publisher: EventPublisher,
    render: Render,
) -> Transaction:
    async with uow:
        now = uow.now
        if await uow.linked_accounts.get(cmd.user_id, cmd.deriv_loginid) is None:
            raise AccountNotLinked(unlinked_message(cmd.deriv_loginid))
        quote = await fx.quote(now)
        txn = Transaction.new_withdrawal(
            id=new_transaction_id(now),
            parties=Parties(user_id=cmd.user_id, msisdn=cmd.msisdn, deriv_loginid=cmd.deriv_loginid),
            amount_usd=cmd.amount,
            quote=quote,
            fee_policy=policy.fees,
            now=now,
        )
        gross = txn.amount_kes + txn.fee
        policy.limits.check_amount(gross)
        await uow.user_limits.lock(cmd.user_id)
        used = await uow.transactions.kes_volume(cmd.user_id, Kind.WITHDRAWAL, *day_window(now))
        policy.limits.check_daily(used_today=used, amount=gross)
        await uow.transactions.add(txn)
        await uow.withdrawal_codes.put(txn.id, cmd.verification_code)
        await uow.idempotency.finish(cmd.idempotency_key, status_code=ACCEPTED, body=render(txn), transaction_id=txn.id)
        try:
            events = await uow.commit()
        except InsufficientFunds as exc:
            raise FloatUnavailable(
                "PenPay cannot pay out this amount right now; please try again later",
                account=exc.details.get("account"),
            ) from exc
    await publish_quietly(publisher, events)
    return txn
