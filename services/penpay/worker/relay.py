"""The outbox relay: publishes outbox rows that the immediate publish after commit missed (a crash, Redis down).

Each pass is one MySQL transaction: claim up to ``limit`` unpublished rows older than ``min_age_s`` with
``FOR UPDATE SKIP LOCKED`` (so several relays run side by side, each taking different rows), ``XADD`` them in one
pipelined round trip, mark them published, commit. A crash between the XADD and the commit publishes the same
rows again on a later pass, under the same ``event_id``; consumers deduplicate on it, so that is harmless.
``min_age_s`` leaves the API's own publish right after commit time to happen first.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import redis.asyncio as aioredis

from penpay.adapters.stream_codec import fields_for, stream_key
from penpay.bootstrap import Database
from penpay.logging import get_logger

log = get_logger(__name__)

DEFAULT_MAXLEN = 1_000_000  # approximate (MAXLEN ~): generous, a backstop against unbounded growth


async def relay_once(
    db: Database,
    redis: aioredis.Redis,
    *,
    prefix: str,
    limit: int = 500,
    min_age_s: float = 5.0,
    maxlen: int = DEFAULT_MAXLEN,
    redis_timeout_s: float = 10.0,
) -> int:
    """Publish one batch of unpublished outbox rows; returns how many were published (0 when there were none)."""
    async with db.uow(actor="outbox-relay") as uow:
        rows = await uow.outbox.claim_unpublished(limit, older_than=uow.now - timedelta(seconds=min_age_s))
        if not rows:
            return 0
        pipe = redis.pipeline(transaction=False)  # one round trip; the keys may live on different cluster slots
        for row in rows:
            fields = fields_for(
                event_id=row.id, event_type=row.event_type, transaction_id=row.transaction_id, payload=row.payload
            )
            pipe.xadd(stream_key(prefix, row.stream), fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        async with asyncio.timeout(redis_timeout_s):
            await pipe.execute()
        await uow.outbox.mark_published([row.id for row in rows], uow.now)
        await uow.commit()
    log.info("outbox_relayed", count=len(rows), first_id=rows[0].id, last_id=rows[-1].id)
    return len(rows)


async def run_relay(
    db: Database,
    redis: aioredis.Redis,
    stop: asyncio.Event,
    *,
    prefix: str,
    interval_s: float = 1.0,
    limit: int = 500,
    min_age_s: float = 5.0,
    maxlen: int = DEFAULT_MAXLEN,
    max_pause_s: float = 30.0,
) -> None:
    """Relay until ``stop`` is set: a full batch is followed at once by the next, otherwise wait ``interval_s``.
    Errors (MySQL or Redis down) are logged and retried with a growing pause; the pass in progress finishes
    before it returns."""
    failures = 0
    while not stop.is_set():
        try:
            published = await relay_once(db, redis, prefix=prefix, limit=limit, min_age_s=min_age_s, maxlen=maxlen)
            failures = 0
        except Exception as exc:  # the relay must outlive an outage of either store
            failures += 1
            published = 0
            log.warning("outbox_relay_failed", error=repr(exc), failures=failures)
        if published >= limit:
            continue
        pause = interval_s if failures == 0 else min(max_pause_s, interval_s * 2**failures)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
