"""One atomic rate limiter in Redis: GCRA (the generic cell rate algorithm) in a single Lua script.

A budget of ``limit`` requests per ``period_s`` allows a burst of ``limit`` and then one request every
``period_s / limit``. The script keeps one key per subject (its "theoretical arrival time" in microseconds, from
Redis's own clock, so API replicas with skewed clocks agree) and either admits the request or says how long to wait.
Everything is integer arithmetic.

A request charged to several budgets (its client address and its user) has them tried in the order given: each
one that admits the request is charged, and the first that refuses stops the rest, exactly as one call per budget
in that order would. Requests that arrive together share one script call (a :class:`MicroBatcher`, so a lone
request is one call at once): one round trip for all of them, each still decided on its own, in arrival order.

Redis Cluster: one call touches the keys of several subjects, so there the keys would need one hash tag (all rate
limits in one slot). PenPay runs one Redis (ARCHITECTURE §1); streams, not rate limits, are what a cluster spreads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from penpay.service_layer.batching import MicroBatcher

# ARGV: the number of requests, then for each request its number of budgets and (interval, tolerance) per budget;
# KEYS: every budget's key, request after request. Returns (allowed, wait_us, 1-based index of the refusing budget)
# per request.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local k, a = 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local allowed, wait, refused = 1, 0, 0
  for i = 1, n do
    local interval, tolerance = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local key = KEYS[k]
    a, k = a + 2, k + 1
    if allowed == 1 then
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      local allow_at = tat + interval - tolerance
      if allow_at > now then
        allowed, wait, refused = 0, allow_at - now, i
      else
        local new_tat = tat + interval
        redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
      end
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = wait
  out[#out + 1] = refused
end
return out
"""
MAX_BATCH = 128


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


@dataclass(frozen=True, slots=True)
class _Ask:
    """What Redis is asked for one request: the budgets up to the first that admits nothing."""

    budgets: Sequence[Budget]
    asked: Sequence[Budget]


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._batcher: MicroBatcher[_Ask, Decision] = MicroBatcher(self._ask, max_batch=MAX_BATCH, max_in_flight=2)

    async def hit_all(self, budgets: Sequence[Budget]) -> Decision:
        """Charge one request to every budget, in order (see the module's docstring)."""
        asked: list[Budget] = []
        for budget in budgets:
            if budget.limit <= 0:  # a budget of nothing refuses without asking Redis (nothing after it is charged)
                break
            asked.append(budget)
        if not asked:
            return _closed(budgets[0]) if budgets else Decision(True, 0)
        return await self._batcher.submit(_Ask(budgets, asked))

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def _ask(self, asks: list[_Ask]) -> list[Decision]:
        keys: list[str] = []
        args: list[int] = [len(asks)]
        for ask in asks:
            args.append(len(ask.asked))
            for budget in ask.asked:
                interval = budget.period_s * 1_000_000 // budget.limit
                keys.append(f"{self._prefix}:ratelimit:{budget.bucket}:{budget.subject}")
                args += [interval, interval * budget.limit]
        flat = await self._script(keys=keys, args=args)
        decisions = []
        for n, ask in enumerate(asks):
            allowed, wait, index = int(flat[3 * n]), int(flat[3 * n + 1]), int(flat[3 * n + 2])
            if allowed != 1:
                decisions.append(Decision(False, wait, ask.asked[index - 1].bucket))
            elif len(ask.asked) < len(ask.budgets):  # charged up to a budget of nothing, which refuses
                decisions.append(_closed(ask.budgets[len(ask.asked)]))
            else:
                decisions.append(Decision(True, 0))
        return decisions


def _closed(budget: Budget) -> Decision:
    return Decision(False, budget.period_s * 1_000_000, budget.bucket)
