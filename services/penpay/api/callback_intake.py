"""How Daraja's callbacks reach the database: batched, like deposits and withdrawals (``api.batch_intake``).

``CallbackIntake.submit`` queues a received callback in a :class:`MicroBatcher`; each flush stores and audits every
callback queued in one MySQL transaction (``service_layer.callbacks.receive_callbacks``), then queues the verified
ones for the callback worker in one pipelined round trip. A callback is acknowledged to Safaricom only after its
batch committed, so an acknowledged callback is never lost; a deadlock retries the whole batch (nothing of the
failed try was kept). At payday, when callbacks arrive by the hundred per second, a batch costs about what one
callback did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from penpay.adapters.db.unit_of_work import with_retries
from penpay.adapters.streams import MPESA_CALLBACKS_STREAM, RedisStreamPublisher
from penpay.logging import get_logger
from penpay.service_layer.batching import MicroBatcher
from penpay.service_layer.callbacks import receive_callbacks
from penpay.service_layer.intake import IntakeUnitOfWork, ReceivedCallback, StoredCallback

log = get_logger(__name__)
MAX_BATCH = 64
MAX_IN_FLIGHT = 2


class CallbackIntake:
    def __init__(
        self,
        uow: Callable[[], IntakeUnitOfWork],
        publisher: RedisStreamPublisher,
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._uow = uow
        self._publisher = publisher
        self._batcher: MicroBatcher[ReceivedCallback, StoredCallback | BaseException] = MicroBatcher(
            self._flush, max_batch=max_batch, max_in_flight=max_in_flight
        )

    async def submit(self, callback: ReceivedCallback) -> StoredCallback:
        """Store (and, if verified, queue) the callback; returns once it is durable, or raises why it is not."""
        stored = await self._batcher.submit(callback)
        if isinstance(stored, BaseException):
            raise stored
        return stored

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def _flush(self, batch: list[ReceivedCallback]) -> Sequence[StoredCallback | BaseException]:
        try:
            stored: list[StoredCallback | BaseException] = list(
                await with_retries(lambda: receive_callbacks(self._uow(), batch))
            )
        except Exception as exc:
            if len(batch) == 1:
                raise
            # whatever refused the batch must not refuse every callback in it: each on its own, so only the one
            # it concerns is answered 500 (and Daraja's retry, or the reconciler, gets another chance)
            log.warning("callback_batch_one_by_one", size=len(batch), error=repr(exc))
            stored = [await self._one(callback) for callback in batch]
        verified = [s for s in stored if isinstance(s, StoredCallback) and s.callback.verified]
        try:
            await self._publisher.add_many(MPESA_CALLBACKS_STREAM, [_message(s) for s in verified])
        except Exception:  # stored durably already: the reconciler settles what the worker never heard of
            log.warning("could not queue stored callbacks", callback_ids=[s.id for s in verified], exc_info=True)
        return stored

    async def _one(self, callback: ReceivedCallback) -> StoredCallback | BaseException:
        try:
            return (await with_retries(lambda: receive_callbacks(self._uow(), [callback])))[0]
        except Exception as exc:
            return exc


def _message(stored: StoredCallback) -> dict[str, str | int]:
    """A stored callback's stream message: its id and kind, and the transaction its URL's token names, so the
    worker's log lines for it carry the transaction id and a batch applies two callbacks of one transaction in
    separate units of work. The worker still matches the callback by its body and refuses a mismatch."""
    fields: dict[str, str | int] = {"callback_id": stored.id, "kind": stored.callback.kind.value}
    if stored.callback.transaction_id is not None:
        fields["transaction_id"] = str(stored.callback.transaction_id)
    return fields
