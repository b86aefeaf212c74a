"""The GCRA rate limiter against the real Redis: one call charges several budgets in order, as separate calls would."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from penpay.adapters.rate_limit import Budget, RateLimiter

pytestmark = pytest.mark.integration


def _limiter(client: aioredis.Redis) -> RateLimiter:
    return RateLimiter(client, prefix=f"test-rl-{secrets.token_hex(4)}")


class TestHitAll:
    async def test_a_request_is_charged_to_every_budget_that_admits_it(self, redis_client: aioredis.Redis) -> None:
        limiter = _limiter(redis_client)
        ip, user = Budget("ip", "10.0.0.1", 3), Budget("user", "u1", 2)

        decisions = [await limiter.hit_all([ip, user]) for _ in range(3)]

        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[2].refused_by == "user" and decisions[2].retry_after_s >= 1
        # the address admitted all three, so its budget of 3 is spent; the user's second budget was never charged more
        assert not (await limiter.hit_all([ip])).allowed
        assert (await limiter.hit_all([Budget("user", "u2", 2)])).allowed

    async def test_the_first_budget_that_refuses_stops_the_rest(self, redis_client: aioredis.Redis) -> None:
        limiter = _limiter(redis_client)
        ip, user = Budget("ip", "10.0.0.2", 1), Budget("user", "u3", 1)
        assert (await limiter.hit_all([ip])).allowed

        refused = await limiter.hit_all([ip, user])

        assert not refused.allowed and refused.refused_by == "ip"
        assert (await limiter.hit_all([user])).allowed  # the refused request did not spend the user's budget

    async def test_a_budget_of_nothing_refuses_without_charging_what_follows(
        self, redis_client: aioredis.Redis
    ) -> None:
        limiter = _limiter(redis_client)
        closed, user = Budget("ip", "10.0.0.3", 0), Budget("user", "u4", 1)

        refused = await limiter.hit_all([closed, user])

        assert not refused.allowed and refused.refused_by == "ip" and refused.retry_after_s == 60
        assert (await limiter.hit_all([user])).allowed
        after = await limiter.hit_all([user, closed])  # charged to the user, then refused by the closed budget
        assert not after.allowed and after.refused_by == "user"

    async def test_one_budget_is_the_single_call(self, redis_client: aioredis.Redis) -> None:
        limiter = _limiter(redis_client)
        assert [(await limiter.hit_all([Budget("ip", "10.0.0.4", 2)])).allowed for _ in range(3)] == [True, True, False]


class TestConcurrentRequests:
    async def test_requests_arriving_together_are_each_decided_in_order(self, redis_client: aioredis.Redis) -> None:
        limiter = _limiter(redis_client)
        budgets = [[Budget("ip", "10.0.1.1", 100), Budget("user", f"u{i % 2}", 3)] for i in range(10)]

        decisions = await asyncio.gather(*(limiter.hit_all(b) for b in budgets))  # one script call, in order

        assert [d.allowed for d in decisions] == [True] * 6 + [False] * 4  # 3 each for u0 and u1
        assert {d.refused_by for d in decisions if not d.allowed} == {"user"}
        assert not (await limiter.hit_all([Budget("user", "u0", 3)])).allowed
        await limiter.aclose()

    async def test_a_redis_failure_reaches_every_request_of_the_call(self) -> None:
        broken = aioredis.from_url(  # nothing listens there; no retries, to keep the test short
            "redis://127.0.0.1:1", socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        limiter = RateLimiter(broken, prefix="test-rl-broken")
        results = await asyncio.gather(
            *(limiter.hit_all([Budget("ip", f"10.0.2.{i}", 5)]) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)  # the API then fails open
        await broken.aclose()
