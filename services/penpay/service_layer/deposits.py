"""Deposit initiation: validate, lock an FX quote, check the user's daily limit, reserve PenPay's Deriv float and
create the transaction, all in one database transaction; then publish its events.

The Deriv float check is the ledger's: the deposit's pending ``usd`` leg credits ``deriv:agent`` at creation, and
that account refuses (``InsufficientFunds``) a credit its available balance cannot cover, so a float already
promised to other pending deposits is never promised twice. The daily limit holds under concurrency because the
user's limit row is locked before the day's volume is read, in the same transaction as the insert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from penpay.service_layer.intake import IntakeUnitOfWork
from penpay.service_layer.publishing import publish_quietly
from penpay_domain.commands import InitiateDeposit
from penpay_domain.errors import DomainError, InsufficientFunds
from penpay_domain.fees import FeePolicy
from penpay_domain.ids import new_transaction_id
from penpay_domain.limits import LimitPolicy, day_window
from penpay_domain.ports import EventPublisher, FxQuotes
from penpay_domain.transaction import Kind, Parties, Transaction

Render = Callable[[Transaction], bytes]
ACCEPTED = 202


class FloatUnavailable(DomainError):
    """PenPay's own float (the Deriv agent balance, or the B2C account) cannot cover the request right now."""

    code = "float_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositPolicy:
    limits: LimitPolicy
    fees: FeePolicy


async def initiate_deposit(
    cmd: InitiateDeposit,
    *,
    uow: IntakeUnitOfWork,
    fx: FxQuotes,
    policy: DepositPolicy,
    publisher: EventPublisher,
    render: Render,
) -> Transaction:
    """Create the deposit. ``render`` turns it into the response body, which is stored under the request's
    idempotency key in the same database transaction (so a replay returns exactly this response)."""
    policy.limits.check_amount(cmd.amount)
    async with uow:
        now = uow.now
        quote = await fx.quote(now)
        await uow.user_limits.lock(cmd.user_id)
        used = await uow.transactions.kes_volume(cmd.user_id, Kind.DEPOSIT, *day_window(now))
        policy.limits.check_daily(used_today=used, amount=cmd.amount)
        txn = Transaction.new_deposit(
            id=new_transaction_id(now),
            parties=Parties(user_id=cmd.user_id, msisdn=cmd.msisdn, deriv_loginid=cmd.deriv_loginid),
            amount_kes=cmd.amount,
            quote=quote,
            fee_policy=policy.fees,
            now=now,
        )
        await uow.transactions.add(txn)
        await uow.idempotency.finish(cmd.idempotency_key, status_code=ACCEPTED, body=render(txn), transaction_id=txn.id)
        try:
            events = await uow.commit()
        except InsufficientFunds as exc:
            raise FloatUnavailable(
                "PenPay cannot take deposits of this size right now; please try again later",
                account=exc.details.get("account"),
            ) from exc
    await publish_quietly(publisher, events)
    return txn
