"""How Daraja's callbacks reach the database: batched like deposits (``api.deposit_intake``).

Each callback is still stored raw and audited before it is acknowledged — the acknowledgement waits for its batch's
commit — but the callbacks that arrive together share one transaction (one multi-row INSERT of the raw rows, one of
their audit rows, one COMMIT) and one pipelined XADD of the verified ones to the callback worker's stream. A batch
that fails fails each of its callbacks' requests with a 500, so Daraja delivers them again; nothing was stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from penpay.adapters.db.intake import SqlCallbackBatches
from penpay.adapters.db.unit_of_work import with_retries
from penpay.adapters.streams import MPESA_CALLBACKS_STREAM, RedisStreamPublisher
from penpay.logging import get_logger
from penpay.service_layer.batching import MicroBatcher
from penpay.service_layer.callbacks import callback_audit_entry
from penpay.service_layer.intake import ReceivedCallback, StoredCallback

log = get_logger(__name__)
MAX_BATCH = 64
MAX_IN_FLIGHT = 2


class CallbackIntake:
    def __init__(self, batches: SqlCallbackBatches, publisher: RedisStreamPublisher) -> None:
        self._batches = batches
        self._publisher = publisher
        self._batcher: MicroBatcher[ReceivedCallback, StoredCallback] = MicroBatcher(
            self._flush, max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT
        )

    async def submit(self, callback: ReceivedCallback) -> StoredCallback:
        return await self._batcher.submit(callback)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def _flush(self, batch: list[ReceivedCallback]) -> Sequence[StoredCallback]:
        stored = await with_retries(lambda: self._batches.store(batch, callback_audit_entry))
        verified = [{"callback_id": s.id, "kind": s.callback.kind.value} for s in stored if s.callback.verified]
        try:
            await self._publisher.add_many(MPESA_CALLBACKS_STREAM, verified)
        except Exception:  # stored durably already: the rows can be re-queued from mpesa_callbacks
            log.warning("could not queue stored callbacks", callback_ids=[v["callback_id"] for v in verified])
        return stored
