"""The processes' Redis client (``adapters.redis_client``) against the real Redis: a burst larger than the pool waits
for connections instead of failing, and a command that cannot get one in time fails with a clear error."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis

from penpay.adapters.redis_client import connect

pytestmark = pytest.mark.integration


async def test_a_burst_larger_than_the_pool_waits_for_connections(redis_url: str) -> None:
    client = connect(redis_url, pool_size=2, timeout_s=5.0, socket_timeout_s=5.0)
    empty = [f"test-pool-{secrets.token_hex(4)}" for _ in range(6)]
    try:
        # each BLPOP holds its connection for 0.2 s: six at once through two connections (redis-py's own pool of
        # two raises MaxConnectionsError at the third)
        results = await asyncio.gather(*(client.blpop([key], timeout=0.2) for key in empty))
    finally:
        await client.aclose()
    assert results == [None] * 6  # every one answered, none failed for want of a connection


async def test_no_free_connection_in_time_is_a_connection_error(redis_url: str) -> None:
    client = connect(redis_url, pool_size=1, timeout_s=0.1, socket_timeout_s=5.0)
    try:
        holder = asyncio.ensure_future(client.blpop([f"test-pool-{secrets.token_hex(4)}"], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await client.ping()
        assert await holder is None
    finally:
        await client.aclose()
