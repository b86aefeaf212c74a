"""One Daraja OAuth token shared by every process (Redis), refreshed by one process at a time.

Safaricom's FAQ says each new token invalidates the previous one, so processes that each fetched their own would
keep invalidating each other. The token lives under one Redis key with its refresh time; a refresh takes a short
lock (``SET NX PX``) so only one process asks Daraja; a token Daraja refused is dropped only if it is still the one
stored (compare-and-delete), so a process holding a stale token cannot throw away a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

_COMPARE_AND_DELETE = """
local stored = redis.call('GET', KEYS[1])
if stored and cjson.decode(stored)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class SharedToken:
    token: str
    refresh_at: float  # epoch seconds


class RedisTokenStore:
    def __init__(self, redis: aioredis.Redis, *, key: str, lock_ttl_s: float = 15.0) -> None:
        self._redis = redis
        self._key = key
        self._lock_key = f"{key}:refresh"
        self._lock_ttl_ms = int(lock_ttl_s * 1000)

    async def get(self) -> SharedToken | None:
        raw = await self._redis.get(self._key)
        if raw is None:
            return None
        data = json.loads(raw)
        shared = SharedToken(str(data["token"]), float(data["refresh_at"]))
        return shared if shared.refresh_at > time.time() else None

    async def put(self, token: str, *, lifetime_s: int, refresh_in_s: float) -> None:
        value = json.dumps({"token": token, "refresh_at": time.time() + refresh_in_s})
        await self._redis.set(self._key, value, ex=max(1, lifetime_s))

    async def invalidate(self, token: str) -> None:
        await self._redis.eval(_COMPARE_AND_DELETE, 1, self._key, token)

    @asynccontextmanager
    async def refreshing(self, wait_s: float = 20.0) -> AsyncIterator[None]:
        """Hold the refresh lock (waiting for another process's refresh to finish first)."""
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + wait_s
        while not await self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms):
            if time.monotonic() > deadline:
                raise TimeoutError("another process is refreshing the Daraja token and has not finished")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self._redis.eval(_RELEASE, 1, self._lock_key, owner)
