"""What the workers' use cases share: their dependencies, and how a step says "try me again later".

Every step is re-entrant: it loads the transaction under a row lock, does nothing unless the status says the step is
due, records its intent before any external effect, calls the provider, and records the answer in a second unit of
work. A crash at any line leaves a status from which running the same step again (a redelivered message, or the
reconciler) finishes the job or settles an unknown outcome with the provider first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from penpay.service_layer.intake import IntakeUnitOfWork
from penpay_domain.errors import DomainError
from penpay_domain.ids import TransactionId
from penpay_domain.ports import Clock, DerivGateway, Mailer, Mpesa, UnitOfWork


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


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowDeps:
    uow: Callable[[], IntakeUnitOfWork]
    mpesa: Mpesa
    deriv: DerivGateway
    mailer: Mailer
    clock: Clock
    callback_urls: CallbackUrls
    reconcile_after: timedelta = timedelta(seconds=30)
    ops_email: str = ""

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
