"""The gateway's command pipeline against the real Redis: commands issued together travel in one pipeline, each
caller gets its own reply or error, and one caller's commands stay in order."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from penpay.gateway.pipelining import CommandPipeline
from tests.redis_keys import drop_keys

pytestmark = pytest.mark.integration

_INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


class CountingRedis(aioredis.Redis):
    """The real client, counting how its commands leave: one by one, or in pipelines (and how many in each)."""

    singles = 0
    pipelines: list[int]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.singles += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        sent = self.pipelines
        original = pipe.execute

        async def execute(raise_on_error: bool = True) -> Any:
            sent.append(len(pipe.command_stack))
            return await original(raise_on_error=raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


@pytest.fixture
async def counting(redis_url: str) -> Any:
    client = CountingRedis.from_url(redis_url)
    client.pipelines = []
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _drop_the_keys(redis_url: str) -> Any:
    yield
    await drop_keys(redis_url, PREFIX)


PREFIX = f"test-pipe-{secrets.token_hex(4)}"  # this run's keys, deleted after each test


def _key() -> str:
    return f"{PREFIX}:{secrets.token_hex(4)}"


class TestCommandPipeline:
    async def test_commands_issued_together_go_in_one_pipeline_and_each_gets_its_own_reply(
        self, counting: CountingRedis
    ) -> None:
        pipe, keys = CommandPipeline(counting), [_key() for _ in range(20)]
        await asyncio.gather(*(counting.set(k, str(n)) for n, k in enumerate(keys)))
        counting.singles, counting.pipelines = 0, []

        replies = await asyncio.gather(*(pipe.execute("GET", k) for k in keys))

        assert replies == [str(n).encode() for n in range(20)]
        assert counting.pipelines == [20]
        assert counting.singles == 0

    async def test_a_lone_command_is_sent_as_a_plain_command(self, counting: CountingRedis) -> None:
        pipe, key = CommandPipeline(counting), _key()

        assert await pipe.execute("EVAL", _INCR_BY, 1, key, 5) == 5
        assert counting.pipelines == []
        assert counting.singles == 1

    async def test_a_failing_command_fails_only_its_own_caller(self, counting: CountingRedis) -> None:
        pipe, text, number = CommandPipeline(counting), _key(), _key()
        await counting.set(text, "not a number")

        results = await asyncio.gather(
            pipe.execute("EVAL", _INCR_BY, 1, text, 1),
            pipe.execute("EVAL", _INCR_BY, 1, number, 7),
            return_exceptions=True,
        )

        assert isinstance(results[0], redis.ResponseError)
        assert results[1] == 7
        assert counting.pipelines == [2]

    async def test_one_callers_commands_run_in_order_while_others_interleave(self, redis_client: Any) -> None:
        pipe, keys = CommandPipeline(redis_client), [_key() for _ in range(8)]

        async def count_up(key: str) -> list[int]:
            return [int(await pipe.execute("EVAL", _INCR_BY, 1, key, 1)) for _ in range(5)]

        assert await asyncio.gather(*(count_up(k) for k in keys)) == [[1, 2, 3, 4, 5]] * 8

    async def test_a_dead_connection_fails_every_command_of_the_pipeline(self) -> None:
        dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        pipe = CommandPipeline(dead)
        try:
            results = await asyncio.gather(*(pipe.execute("GET", _key()) for _ in range(3)), return_exceptions=True)
        finally:
            await dead.aclose()

        assert all(isinstance(r, redis.ConnectionError) for r in results)

    async def test_a_cancelled_caller_does_not_disturb_the_others(self, redis_client: Any) -> None:
        pipe, key = CommandPipeline(redis_client), _key()
        await redis_client.set(key, "kept")

        doomed = asyncio.ensure_future(pipe.execute("GET", key))
        kept = asyncio.ensure_future(pipe.execute("GET", key))
        await asyncio.sleep(0)
        doomed.cancel()

        assert await kept == b"kept"
        assert doomed.cancelled()

    async def test_at_most_max_in_flight_pipelines_and_the_commands_that_wait_leave_together(
        self, redis_client: Any, redis_url: str
    ) -> None:
        """Commands issued one turn at a time while every slot is out neither take a connection each nor wait
        forever: they leave together in the next pipeline, and every caller gets its own reply."""
        gate = asyncio.Event()
        sent: list[int] = []
        out = 0
        most_out = 0

        class HeldRedis(aioredis.Redis):
            async def execute_command(self, *args: Any, **options: Any) -> Any:
                nonlocal out, most_out
                out += 1
                most_out = max(most_out, out)
                sent.append(1)
                try:
                    await gate.wait()
                    return await super().execute_command(*args, **options)
                finally:
                    out -= 1

            def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
                pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
                original = pipe.execute

                async def execute(raise_on_error: bool = True) -> Any:
                    nonlocal out, most_out
                    out += 1
                    most_out = max(most_out, out)
                    sent.append(len(pipe.command_stack))
                    try:
                        await gate.wait()
                        return await original(raise_on_error=raise_on_error)
                    finally:
                        out -= 1

                pipe.execute = execute  # type: ignore[method-assign]
                return pipe

        held = HeldRedis.from_url(redis_url)
        keys = [_key() for _ in range(10)]
        await asyncio.gather(*(redis_client.set(k, str(n)) for n, k in enumerate(keys)))
        pipe = CommandPipeline(held, max_in_flight=2)
        try:
            calls = []
            for k in keys:  # one command a turn: each would be a pipeline (a connection) of its own
                calls.append(asyncio.ensure_future(pipe.execute("GET", k)))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            assert pipe.in_flight == 2 and sent == [1, 1]  # two out, the other eight waiting
            gate.set()
            replies = await asyncio.gather(*calls)
        finally:
            await held.aclose()
        assert replies == [str(n).encode() for n in range(10)]
        assert most_out == 2
        assert sorted(sent) == [1, 1, 8]  # the eight that waited, in one pipeline
        assert pipe.in_flight == 0
