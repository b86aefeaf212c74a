"""Exactly one live gateway: a Redis lease with a fencing token.

``SET lease NX PX ttl`` wins the lease; the value carries a fencing token from ``INCR`` so every holder is
distinguishable and newer holders have larger tokens. The holder renews it every ``ttl/3`` with a compare-and-set.
``is_held()`` is a local, conservative answer (the last renewal plus 80 % of the TTL, on the monotonic clock): a
gateway that cannot renew stops serving money calls before another instance can take over. Writes to the
reference store are fenced too: they check the lease value inside the same Lua script.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from penpay.logging import get_logger

log = get_logger(__name__)

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(self, redis: Redis, *, key: str, ttl_s: float, instance_id: str | None = None) -> None:
        self._redis = redis
        self.key = key
        self.fence_key = f"{key}:fence"
        self.ttl_ms = int(ttl_s * 1000)
        self.instance_id = instance_id or uuid.uuid4().hex
        self.value = ""
        self.fencing_token = 0
        self._valid_until = 0.0
        self._lost = asyncio.Event()

    def is_held(self) -> bool:
        return bool(self.value) and time.monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        started = time.monotonic()
        fence = int(await self._redis.eval(_ACQUIRE, 2, self.key, self.fence_key, self.instance_id, self.ttl_ms))
        if fence == 0:
            return False
        self.fencing_token = fence
        self.value = f"{self.instance_id}:{fence}"
        self._valid_until = started + self.ttl_ms / 1000 * 0.8
        self._lost.clear()
        log.info("gateway.lease_acquired", fence=fence)
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait (hot standby) until the lease is ours; ``False`` if ``stop`` was set first."""
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    return True
            except RedisError as exc:
                log.warning("gateway.lease_redis_error", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_ms / 1000 / 3)
        return False

    async def renew(self) -> bool:
        started = time.monotonic()
        try:
            renewed = await self._redis.eval(_RENEW, 1, self.key, self.value, self.ttl_ms)
        except RedisError as exc:
            log.warning("gateway.lease_renew_failed", error=str(exc))
            return self.is_held()
        if renewed:
            self._valid_until = started + self.ttl_ms / 1000 * 0.8
            return True
        self._mark_lost()
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew every ttl/3 until ``stop`` or until the lease is lost (then return at once)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_ms / 1000 / 3)
            if stop.is_set():
                return
            if not await self.renew() or not self.is_held():
                self._mark_lost()
                return

    async def release(self) -> None:
        if not self.value:
            return
        with contextlib.suppress(RedisError):
            await self._redis.eval(_RELEASE, 1, self.key, self.value)
        log.info("gateway.lease_released", fence=self.fencing_token)
        self.value = ""
        self._valid_until = 0.0

    def _mark_lost(self) -> None:
        if self.value:
            log.error("gateway.lease_lost", fence=self.fencing_token)
        self.value = ""
        self._valid_until = 0.0
        self._lost.set()
