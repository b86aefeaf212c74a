"""Publishing right after commit. A failure is logged, never raised: the events are already in the outbox, and
the relay publishes whatever was missed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from penpay_domain.events import TransactionEvent
from penpay_domain.ports import EventPublisher

log = logging.getLogger(__name__)


async def publish_quietly(publisher: EventPublisher, events: Sequence[TransactionEvent]) -> bool:
    try:
        await publisher.publish(events)
    except Exception:  # a broken bus must not fail a committed request: the outbox relay republishes
        log.warning(
            "publish failed; the outbox relay will publish",
            exc_info=True,
            extra={"transaction_ids": sorted({e.transaction_id for e in events})},
        )
        return False
    return True
