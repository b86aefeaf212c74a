"""The whole flow on one screen: which stream, which consumer group, which event, which step.

A step takes the worker's dependencies, the event and the delivery (which it records as processed in its own
concluding unit of work); it is re-entrant and idempotent (see ``flow.py``), so a message delivered twice, or after
a crash, does no harm. Callbacks arrive on their own stream (raw bodies stored by
the API) and are applied by ``callbacks.apply_stored_callback``.

The hot steps also have a batch form (``Subscription.batched``): the worker hands it the messages of one event that
are in flight together, and it runs them through shared units of work (one ``SELECT … FOR UPDATE`` of their rows in
id order, one commit), with the provider calls made concurrently between them. The one-message step is that batch
form with one item, so both run the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from penpay.service_layer import collection, crediting, debiting, notifications, payouts
from penpay.service_layer.flow import Delivery, FlowDeps, Item, Results
from penpay_domain import events as ev
from penpay_domain.ids import TransactionId


class Step(Protocol):
    """A step: the worker's dependencies, the event, and the delivery it deduplicates (see ``flow.Delivery``)."""

    async def __call__(self, deps: FlowDeps, event: ev.TransactionEvent, *, delivery: Delivery | None) -> object: ...


class _ById(Protocol):
    async def __call__(self, deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None) -> object: ...


def _by_id(step: _ById) -> Step:
    async def run(deps: FlowDeps, event: ev.TransactionEvent, *, delivery: Delivery | None) -> object:
        return await step(deps, TransactionId(event.transaction_id), delivery=delivery)

    run.__name__ = getattr(step, "__name__", run.__name__)
    return run


class BatchStep(Protocol):
    """The same step for a batch of distinct transactions (the worker never batches two messages of one
    transaction): one result per item, in order, the outcome or the exception that item's message ends with. A batch
    of one is the step itself."""

    async def __call__(self, deps: FlowDeps, items: Sequence[Item]) -> Results: ...


@dataclass(frozen=True, slots=True)
class Subscription:
    stream: str  # the event's ``stream`` (key: <prefix>:<stream>)
    group: str  # one consumer group per worker type
    steps: Mapping[str, Step]  # event name -> step; other events on the stream are acknowledged and skipped
    # event name -> the step's batch form, where it has one: messages handled together share its units of work
    batched: Mapping[str, BatchStep] = field(default_factory=dict)


_NOTIFIED = (*notifications.SUBJECTS, ev.TransactionNeedsReview.name)
SUBSCRIPTIONS: Mapping[str, Subscription] = {
    "deposit": Subscription(
        "deposits",
        "deposit",
        {ev.DepositRequested.name: _by_id(collection.push_stk)},
        batched={ev.DepositRequested.name: collection.push_stk_many},
    ),
    # deposit.payment_received is carried by the callback worker, which credits the deposits it saw paid
    # (crediting.carry_credits); it reaches this group only when that credit could not finish there
    "deriv": Subscription(
        "deriv_transfers",
        "deriv",
        {
            ev.DepositPaymentReceived.name: _by_id(crediting.credit_deposit),
            ev.PayoutFailed.name: _by_id(crediting.reverse_withdrawal),
        },
        batched={ev.DepositPaymentReceived.name: crediting.credit_deposits},
    ),
    "withdrawal": Subscription(
        "withdrawals",
        "withdrawal",
        {
            ev.WithdrawalRequested.name: _by_id(debiting.debit_withdrawal),
            ev.WithdrawalDebited.name: _by_id(payouts.pay_out),
            ev.DerivCreditRejected.name: _by_id(payouts.refund_deposit),
        },
        batched={
            ev.WithdrawalRequested.name: debiting.debit_withdrawals,
            ev.WithdrawalDebited.name: payouts.pay_outs,
        },
    ),
    "notifier": Subscription(
        "notifications",
        "notifier",
        dict.fromkeys(_NOTIFIED, notifications.notify),
        batched=dict.fromkeys(_NOTIFIED, notifications.notify_many),
    ),
}
