"""Redis keys of a test run: streams, locks and the gateway's records, under the run's own prefix."""

from __future__ import annotations

import redis.asyncio as aioredis


async def drop_keys(redis_url: str, prefix: str) -> None:
    """Delete a run's Redis keys: its streams (``prefix:*``) and the gateway's records, which share one cluster
    slot under ``{prefix:gateway}`` and are otherwise kept for months (reference -> result)."""
    client = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
            batch = [key async for key in client.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(batch), 500):
                await client.delete(*batch[start : start + 500])
    finally:
        await client.aclose()
