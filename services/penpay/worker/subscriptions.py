"""Turning the service layer's subscriptions (``service_layer.handlers``) into stream handlers.

Each handler runs the step with a :class:`~penpay.service_layer.flow.Delivery` for the message's ``dedupe_key`` (the
outbox event id): the step skips a message its group already processed (checked in its first unit of work) and
records the key in the unit of work that concludes it, in the same commit as its answer, so deduplicating costs no
unit of work of its own. A step that ends without such a commit (nothing due, an outcome left unknown, an e-mail
sent) is recorded here afterwards; steps are idempotent by their state guards, so the window between their commit
and that record (a crash there) only means the step runs again and finds nothing to do. Callback messages carry the
stored callback's id; applying one is a single unit of work that records the key in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from penpay.adapters.db.unit_of_work import with_retries
from penpay.adapters.stream_consumer import PoisonMessage, StreamMessage
from penpay.logging import get_logger
from penpay.service_layer.callbacks import CallbackDecoder, Verdict, apply_callback
from penpay.service_layer.flow import Delivery, FlowDeps
from penpay.service_layer.handlers import Subscription

log = get_logger(__name__)

Handler = Callable[[StreamMessage], Awaitable[None]]


class CallbackNotReady(Exception):
    """The callback overtook Daraja's answer to our request; the message is retried shortly."""


def event_handler(sub: Subscription, deps: FlowDeps) -> Handler:
    async def handle(message: StreamMessage) -> None:
        event = message.event
        if event is None:
            raise PoisonMessage("no event in the message")
        step = sub.steps.get(event.name)
        if step is None:
            return  # another group's business on a shared stream

        async def attempt() -> tuple[object, Delivery]:
            delivery = Delivery(sub.group, message.dedupe_key)  # fresh per try: a rolled-back record is no record
            return await step(deps, event, delivery=delivery), delivery

        outcome, delivery = await with_retries(attempt)  # a deadlock is retried at once, not in a minute
        if not delivery.recorded:
            async with deps.uow() as uow:
                await uow.processed.mark(sub.group, message.dedupe_key, uow.now)
                await uow.commit()
        log.info(
            "step_done", step=event.name, group=sub.group, outcome=str(outcome), transaction_id=event.transaction_id
        )

    return handle


def callback_handler(deps: FlowDeps, decoder: CallbackDecoder, group: str = "callbacks") -> Handler:
    async def handle(message: StreamMessage) -> None:
        try:
            callback_id = int(message.fields["callback_id"])
        except (KeyError, ValueError) as exc:
            raise PoisonMessage(f"no callback id in the message: {exc}") from exc

        async def apply_once() -> Verdict | None:
            async with deps.uow() as uow:
                if not await uow.processed.mark(group, message.dedupe_key, uow.now):
                    return None
                stored = await uow.callbacks.get(callback_id)
                verdict = await apply_callback(uow, stored, decoder)
                if verdict is Verdict.EARLY:
                    raise CallbackNotReady(f"callback {callback_id} arrived before its STK push was recorded")
                await uow.commit()
                return verdict

        verdict = await with_retries(apply_once)
        if verdict is None:
            return
        log.info(
            "callback_applied", callback_id=callback_id, verdict=verdict.value, transaction_id=message.transaction_id
        )

    return handle
