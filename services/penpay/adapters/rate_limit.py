"""One atomic rate limiter in Redis: GCRA (the generic cell rate algorithm) in a single Lua script.

A budget of ``limit`` requests per ``period_s`` allows a burst of ``limit`` and then one request every
``period_s / limit``. The script keeps one key per subject (its "theoretical arrival time" in microseconds, from
Redis's own clock, so API replicas with skewed clocks agree) and either admits the request or says how long to wait.
Everything is integer arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

_GCRA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', key) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - tolerance
if allow_at > now then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_us: int

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for ``Retry-After`` (at least 1 when refused)."""
        return max(1, math.ceil(self.retry_after_us / 1_000_000)) if not self.allowed else 0


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)

    async def hit(self, bucket: str, subject: str, *, limit: int, period_s: int = 60) -> Decision:
        if limit <= 0:
            return Decision(False, period_s * 1_000_000)
        interval = period_s * 1_000_000 // limit
        result = await self._script(
            keys=[f"{self._prefix}:ratelimit:{bucket}:{subject}"], args=[interval, interval * limit]
        )
        allowed, wait = int(result[0]), int(result[1])
        return Decision(allowed == 1, wait)
