"""Admin decisions on NEEDS_REVIEW transactions: resolve with the outcome found at the provider, or send the
transaction back into the flow. The aggregate checks the move and converges its ledger legs; the unit of work
writes the transition with an audit row naming the admin, plus an explicit ``admin.*`` audit row with the note."""

from __future__ import annotations

from collections.abc import Callable

from penpay.service_layer.publishing import publish_quietly
from penpay_domain.commands import ResolveReview, RetryReview
from penpay_domain.ports import EventPublisher, UnitOfWork
from penpay_domain.transaction import Transaction


async def resolve_review(
    cmd: ResolveReview, *, uow_factory: Callable[[], UnitOfWork], publisher: EventPublisher
) -> Transaction:
    async with uow_factory() as uow:
        txn = await uow.transactions.get(cmd.transaction_id, for_update=True)
        before = txn.status
        txn.resolve(cmd.status, now=uow.now, by=cmd.admin, note=cmd.note)
        await uow.audit.append(
            actor=f"admin:{cmd.admin}",
            action="admin.resolve",
            subject=txn.id,
            payload={"from": before.value, "to": cmd.status.value, "note": cmd.note},
            now=uow.now,
        )
        events = await uow.commit()
    await publish_quietly(publisher, events)
    return txn


async def retry_review(
    cmd: RetryReview, *, uow_factory: Callable[[], UnitOfWork], publisher: EventPublisher
) -> Transaction:
    async with uow_factory() as uow:
        txn = await uow.transactions.get(cmd.transaction_id, for_update=True)
        before = txn.status
        txn.resume(cmd.status, now=uow.now, by=cmd.admin)
        await uow.audit.append(
            actor=f"admin:{cmd.admin}",
            action="admin.retry",
            subject=txn.id,
            payload={"from": before.value, "to": cmd.status.value},
            now=uow.now,
        )
        events = await uow.commit()
    await publish_quietly(publisher, events)
    return txn
