"""Every process shares one Daraja OAuth token through Redis: a new token invalidates the previous one at Daraja,
so processes that each fetched their own would keep knocking each other's out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from penpay.adapters.daraja.client import DarajaClient
from penpay.adapters.daraja.token_store import RedisTokenStore
from tests.contract.daraja_fixtures import CallbackReceiver, RunningDaraja, callback_receiver, running_daraja
from tests.contract.test_daraja_client import OAUTH, STK, journal_paths, make_client, push

pytestmark = pytest.mark.contract


@pytest.fixture
async def daraja() -> AsyncIterator[RunningDaraja]:
    async with running_daraja(over_socket=True) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with callback_receiver() as running:
        yield running


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[RedisTokenStore]:
    key = f"test:daraja:oauth:{uuid.uuid4().hex}"
    yield RedisTokenStore(redis_client, key=key)
    await redis_client.delete(key, f"{key}:refresh")


@pytest.fixture
async def two_processes(
    daraja: RunningDaraja, store: RedisTokenStore
) -> AsyncIterator[tuple[DarajaClient, DarajaClient]]:
    first, second = make_client(daraja, token_store=store), make_client(daraja, token_store=store)
    yield first, second
    await first.aclose()
    await second.aclose()


class TestSharedToken:
    async def test_two_processes_fetch_one_token_between_them(
        self, daraja: RunningDaraja, two_processes: tuple[DarajaClient, DarajaClient], receiver: CallbackReceiver
    ) -> None:
        first, second = two_processes
        await asyncio.gather(
            push(first, receiver, msisdn="254712000001"), push(second, receiver, msisdn="254712000002")
        )
        await push(first, receiver, msisdn="254712000003")
        paths = [p for p, _ in journal_paths(daraja)]
        assert paths.count(OAUTH) == 1
        assert paths.count(STK) == 3

    async def test_after_daraja_drops_the_token_one_refresh_serves_both(
        self, daraja: RunningDaraja, two_processes: tuple[DarajaClient, DarajaClient], receiver: CallbackReceiver
    ) -> None:
        first, second = two_processes
        await push(first, receiver, msisdn="254712000001")
        await push(second, receiver, msisdn="254712000002")
        async with daraja.control() as control:
            assert (await control.post("/daraja/tokens/expire")).status_code == 204

        await push(first, receiver, msisdn="254712000003")  # refused, refreshed (shared), retried
        await push(second, receiver, msisdn="254712000004")  # its cached token is stale: refused, then shares

        assert [p for p, _ in journal_paths(daraja)].count(OAUTH) == 2
        assert [s for p, s in journal_paths(daraja) if p == STK][-1] == 200
