"""The outbox relay against the real MariaDB and Redis: rows committed but never published reach their streams
(as the same events), are marked published, and concurrent relays publish each row exactly once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from penpay.adapters import stream_codec
from penpay.adapters.db.tables import outbox
from penpay.bootstrap import Database
from penpay.settings import Settings
from penpay.worker.relay import relay_once, run_relay
from penpay_domain.events import DepositCompleted, DepositRequested, TransactionEvent

pytestmark = pytest.mark.integration


@pytest.fixture
async def prefix(settings: Settings, db: Database, redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A stream prefix of this test's own, and an outbox emptied of rows other tests left unpublished."""
    own = f"{settings.stream_prefix}:relay-{secrets.token_hex(4)}"
    while await relay_once(db, redis_client, prefix=own, min_age_s=0):
        pass
    await _delete_streams(redis_client, own)
    yield own
    await _delete_streams(redis_client, own)


async def _delete_streams(redis: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        for key in keys:  # one key per command: stream keys may live on different cluster slots
            await redis.delete(key)


def _events(n: int, *, offset: int = 0) -> list[TransactionEvent]:
    at = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    made: list[TransactionEvent] = []
    for i in range(offset, offset + n):
        cls = DepositRequested if i % 2 == 0 else DepositCompleted
        made.append(
            cls(
                transaction_id=f"01RELAY{i:019d}",
                occurred_at=at,
                kind="deposit",
                user_id="u-relay",
                from_status=None if cls is DepositRequested else "CREDITING",
                to_status="PENDING" if cls is DepositRequested else "COMPLETED",
            )
        )
    return made


async def _commit_to_outbox(db: Database, events: Sequence[TransactionEvent], *, age_s: float) -> list[int]:
    """Outbox rows as a crashed API would leave them: committed, never published."""
    async with db.uow() as uow:
        ids = await uow.outbox.add(events, uow.now - timedelta(seconds=age_s))
        await uow.commit()
    return ids


async def _published_at(db: Database, ids: Sequence[int]) -> dict[int, datetime | None]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(sa.select(outbox.c.id, outbox.c.published_at).where(outbox.c.id.in_(list(ids))))
        return {int(r.id): r.published_at for r in rows}


async def _read_all(redis: aioredis.Redis, prefix: str, *streams: str) -> list[TransactionEvent]:
    found: list[TransactionEvent] = []
    for stream in streams:
        entries: list[tuple[bytes, dict[bytes | str, bytes | str]]] = await redis.xrange(  # type: ignore[assignment]
            stream_codec.stream_key(prefix, stream)
        )
        found.extend(stream_codec.decode(fields) for _, fields in entries)
    return found


class TestRelayOnce:
    async def test_committed_but_unpublished_rows_are_published_as_the_same_events_and_marked(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        events = _events(4)
        ids = await _commit_to_outbox(db, events, age_s=60)

        assert await relay_once(db, redis_client, prefix=prefix) == 4

        published = await _read_all(redis_client, prefix, "deposits", "notifications")
        expected = [replace(e, event_id=i) for e, i in zip(events, ids, strict=True)]
        assert sorted(published, key=lambda e: e.event_id or 0) == expected
        assert [e.stream for e in expected] == ["deposits", "notifications", "deposits", "notifications"]
        assert all(at is not None for at in (await _published_at(db, ids)).values())
        assert await relay_once(db, redis_client, prefix=prefix) == 0

    async def test_nothing_to_relay_returns_zero_and_publishes_nothing(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        assert await relay_once(db, redis_client, prefix=prefix) == 0
        assert [key async for key in redis_client.scan_iter(match=f"{prefix}:*")] == []

    async def test_fresh_rows_are_left_for_the_publish_right_after_commit(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        [fresh] = await _commit_to_outbox(db, _events(1), age_s=0)
        assert await relay_once(db, redis_client, prefix=prefix, min_age_s=30) == 0
        assert (await _published_at(db, [fresh]))[fresh] is None
        assert await relay_once(db, redis_client, prefix=prefix, min_age_s=0) == 1

    async def test_a_crash_between_xadd_and_commit_republishes_under_the_same_event_id(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        ids = await _commit_to_outbox(db, _events(2), age_s=60)
        with pytest.raises(RuntimeError, match="crashed after XADD"):
            await relay_once(db, cast(aioredis.Redis, CrashesAfterXadd(redis_client)), prefix=prefix)
        assert set((await _published_at(db, ids)).values()) == {None}  # rolled back

        assert await relay_once(db, redis_client, prefix=prefix) == 2
        published = await _read_all(redis_client, prefix, "deposits", "notifications")
        assert sorted(e.event_id or 0 for e in published) == sorted([*ids, *ids])  # twice, same identities

    async def test_redis_down_leaves_rows_unpublished_for_a_later_pass(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        ids = await _commit_to_outbox(db, _events(1), age_s=60)
        closed_port = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        with pytest.raises(RedisConnectionError):
            await relay_once(db, closed_port, prefix=prefix)
        await closed_port.aclose()
        assert (await _published_at(db, ids))[ids[0]] is None
        assert await relay_once(db, redis_client, prefix=prefix) == 1


class CrashesAfterXadd:
    """A Redis whose pipelines do their XADDs, then the process "dies" before the relay can commit."""

    def __init__(self, real: aioredis.Redis) -> None:
        self._real = real

    def pipeline(self, transaction: bool = True) -> Any:
        real_pipe = self._real.pipeline(transaction=transaction)

        class Pipe:
            def xadd(self, *args: Any, **kwargs: Any) -> None:
                real_pipe.xadd(*args, **kwargs)

            async def execute(self) -> None:
                await real_pipe.execute()
                raise RuntimeError("crashed after XADD")

        return Pipe()


class TestConcurrentRelays:
    async def test_two_relays_running_at_once_publish_each_row_exactly_once(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        ids = await _commit_to_outbox(db, _events(120), age_s=60)

        async def drain() -> int:
            total = 0
            while published := await relay_once(db, redis_client, prefix=prefix, limit=7):
                total += published
                await asyncio.sleep(0)
            return total

        counts = await asyncio.gather(drain(), drain(), drain())

        assert sum(counts) == 120
        published = await _read_all(redis_client, prefix, "deposits", "notifications")
        assert sorted(e.event_id or 0 for e in published) == sorted(ids)
        assert None not in (await _published_at(db, ids)).values()

    async def test_the_relay_loop_publishes_what_appears_and_stops_when_asked(
        self, db: Database, redis_client: aioredis.Redis, prefix: str
    ) -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(
            run_relay(db, redis_client, stop, prefix=prefix, interval_s=0.05, min_age_s=0, limit=10)
        )
        ids = await _commit_to_outbox(db, _events(25), age_s=0)
        for _ in range(100):
            if None not in (await _published_at(db, ids)).values():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(loop, 2)
        published = await _read_all(redis_client, prefix, "deposits", "notifications")
        assert sorted(e.event_id or 0 for e in published) == sorted(ids)
