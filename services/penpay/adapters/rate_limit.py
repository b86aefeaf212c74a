"""One atomic rate limiter in Redis: GCRA (the generic cell rate algorithm) in a single Lua script.

A budget of ``limit`` requests per ``period_s`` allows a burst of ``limit`` and then one request every
``period_s / limit``. The script keeps one key per subject (its "theoretical arrival time" in microseconds, from
Redis's own clock, so API replicas with skewed clocks agree) and either admits the request or says how long to wait.
Everything is integer arithmetic.

A request charged to several budgets (its client address and its user) is one script call, one round trip: the
budgets are tried in the order given, each one that admits the request is charged, and the first that refuses
stops the rest, exactly as one call per budget in that order would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allow_at = tat + interval - tolerance
  if allow_at > now then
    return {0, allow_at - now, i}
  end
  local new_tat = tat + interval
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {1, 0, 0}
"""


@dataclass(frozen=True, slots=True)
class Budget:
    """``limit`` requests per ``period_s`` for one ``subject`` of one ``bucket`` (``ip``, ``user`` ...)."""

    bucket: str
    subject: str
    limit: int
    period_s: int = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_us: int
    refused_by: str | None = None  # the bucket that refused

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
        return await self.hit_all([Budget(bucket, subject, limit, period_s)])

    async def hit_all(self, budgets: Sequence[Budget]) -> Decision:
        """Charge one request to every budget, in order, in one round trip (see the module's docstring)."""
        keys: list[str] = []
        args: list[int] = []
        for budget in budgets:
            if budget.limit <= 0:  # a budget of nothing refuses without asking Redis (nothing after it is charged)
                if not keys:
                    return Decision(False, budget.period_s * 1_000_000, budget.bucket)
                break
            interval = budget.period_s * 1_000_000 // budget.limit
            keys.append(f"{self._prefix}:ratelimit:{budget.bucket}:{budget.subject}")
            args += [interval, interval * budget.limit]
        if not keys:
            return Decision(True, 0)
        result = await self._script(keys=keys, args=args)
        allowed, wait, index = int(result[0]), int(result[1]), int(result[2])
        if allowed == 1:
            if len(keys) < len(budgets):  # stopped at a budget of nothing
                refused = budgets[len(keys)]
                return Decision(False, refused.period_s * 1_000_000, refused.bucket)
            return Decision(True, 0)
        return Decision(False, wait, budgets[index - 1].bucket)
