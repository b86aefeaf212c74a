"""The stream consumer runtime against the real Redis (and MariaDB where handlers deduplicate): acknowledgement after
the handler, redelivery and dead letters, reclaiming a dead consumer's work, splitting work, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from penpay.adapters import stream_codec
from penpay.adapters.db.tables import processed_messages
from penpay.adapters.stream_consumer import Handler, PoisonMessage, StreamConsumer, StreamMessage, decode_event
from penpay.bootstrap import Database
from penpay.settings import Settings
from penpay_domain.events import DepositRequested, TransactionEvent

pytestmark = pytest.mark.integration

CLAIM_IDLE_MS = 150


def _no_backoff(_: int) -> float:
    return 0.01


@pytest.fixture
def keys(settings: Settings) -> tuple[str, str]:
    """A stream and a dead-letter stream of this test's own."""
    name = secrets.token_hex(6)
    return (
        stream_codec.stream_key(settings.stream_prefix, f"test-{name}"),
        stream_codec.stream_key(settings.stream_prefix, f"dead-{name}"),
    )


def _event(n: int) -> TransactionEvent:
    return DepositRequested(
        transaction_id=f"01TEST{n:020d}",
        occurred_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        kind="deposit",
        user_id="u-1",
        from_status=None,
        to_status="PENDING",
        event_id=n,
    )


async def _publish(redis: aioredis.Redis, key: str, *events: TransactionEvent) -> list[str]:
    return [
        _text(await redis.xadd(key, stream_codec.encode(e)))  # type: ignore[arg-type]
        for e in events
    ]


def _consumer(
    redis: aioredis.Redis, keys: tuple[str, str], handle: Handler, name: str = "c1", **options: Any
) -> StreamConsumer:
    arguments: dict[str, Any] = {
        "stream_key": keys[0],
        "dead_letter_key": keys[1],
        "group": "testers",
        "consumer_name": name,
        "handle": handle,
        "block_ms": 50,
        "claim_idle_ms": CLAIM_IDLE_MS,
        "claim_every_ms": 50,
        "max_deliveries": 3,
        "backoff": _no_backoff,
    }
    arguments.update(options)
    return StreamConsumer(redis, **arguments)


@contextlib.asynccontextmanager
async def running(consumer: StreamConsumer) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield task
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 5)


async def eventually(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until ``check()`` (or what it returns, if awaitable) is truthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def pending_count(redis: aioredis.Redis, key: str) -> int:
    summary = await redis.xpending(key, "testers")
    return int(summary["pending"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def dead_letters(redis: aioredis.Redis, key: str) -> list[dict[str, str]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(key)  # type: ignore[assignment]
    return [{_text(k): _text(v) for k, v in fields.items()} for _, fields in entries]


class TestDelivery:
    async def test_a_handled_message_is_acknowledged_and_carries_its_decoded_event(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        seen: list[StreamMessage] = []

        async def handle(message: StreamMessage) -> None:
            seen.append(message)

        [entry_id] = await _publish(redis_client, keys[0], _event(1))
        async with running(_consumer(redis_client, keys, handle)):
            await eventually(lambda: len(seen) == 1)
            await eventually(lambda: _zero(pending_count(redis_client, keys[0])))
        [message] = seen
        assert (message.id, message.stream, message.deliveries) == (entry_id, keys[0], 1)
        assert message.event == _event(1)
        assert message.transaction_id == _event(1).transaction_id
        assert message.dedupe_key == "event:1"
        assert await pending_count(redis_client, keys[0]) == 0

    async def test_entries_published_before_the_group_existed_are_handled(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        seen: list[int | None] = []

        async def handle(message: StreamMessage) -> None:
            seen.append(message.event.event_id if message.event else None)

        await _publish(redis_client, keys[0], _event(1), _event(2), _event(3))
        async with running(_consumer(redis_client, keys, handle, batch=2)):
            await eventually(lambda: len(seen) == 3)
        assert sorted(seen) == [1, 2, 3]  # handled concurrently: in no promised order

    async def test_a_second_start_of_the_same_group_is_fine(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        async def handle(message: StreamMessage) -> None:
            return None

        consumer = _consumer(redis_client, keys, handle)
        await consumer.ensure_group()
        await consumer.ensure_group()
        groups = await redis_client.xinfo_groups(keys[0])
        assert [g["name"] for g in groups] == [b"testers"]


class TestFailures:
    async def test_a_failing_message_is_redelivered_after_claim_idle_then_dead_lettered_with_the_reason(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        attempts: list[tuple[int, float]] = []
        loop = asyncio.get_running_loop()

        async def handle(message: StreamMessage) -> None:
            attempts.append((message.deliveries, loop.time()))
            raise RuntimeError("Daraja is down")

        [entry_id] = await _publish(redis_client, keys[0], _event(7))
        async with running(_consumer(redis_client, keys, handle)):
            await eventually(lambda: redis_client.xlen(keys[1]))
        assert [d for d, _ in attempts] == [1, 2, 3]
        gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
        assert all(gap >= CLAIM_IDLE_MS / 1000 * 0.9 for gap in gaps), gaps
        [dead] = await dead_letters(redis_client, keys[1])
        assert dead["original_stream"] == keys[0]
        assert dead["original_id"] == entry_id
        assert dead["consumer_group"] == "testers"
        assert dead["deliveries"] == "3"
        assert "Daraja is down" in dead["error"]
        assert decode_event(dead) == _event(7)  # the original entry travels with it
        assert await pending_count(redis_client, keys[0]) == 0

    async def test_a_message_that_fails_once_is_handled_on_redelivery(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        deliveries: list[int] = []

        async def handle(message: StreamMessage) -> None:
            deliveries.append(message.deliveries)
            if message.deliveries == 1:
                raise ConnectionError("blip")

        await _publish(redis_client, keys[0], _event(8))
        async with running(_consumer(redis_client, keys, handle)):
            await eventually(lambda: deliveries == [1, 2])
            await eventually(lambda: _zero(pending_count(redis_client, keys[0])))
        assert await redis_client.xlen(keys[1]) == 0

    async def test_a_malformed_entry_goes_straight_to_the_dead_letter(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        handled: list[StreamMessage] = []

        async def handle(message: StreamMessage) -> None:
            handled.append(message)

        bad_id = _text(await redis_client.xadd(keys[0], {"event_id": "x", "payload": "{not json"}))
        await _publish(redis_client, keys[0], _event(9))
        async with running(_consumer(redis_client, keys, handle)):
            await eventually(lambda: len(handled) == 1)
            await eventually(lambda: _zero(pending_count(redis_client, keys[0])))
        [dead] = await dead_letters(redis_client, keys[1])
        assert dead["original_id"] == bad_id
        assert dead["deliveries"] == "1"
        assert "undecodable" in dead["error"]
        assert dead["payload"] == "{not json"
        assert [m.event for m in handled] == [_event(9)]

    async def test_a_poison_message_is_dead_lettered_at_once(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        calls: list[int] = []

        async def handle(message: StreamMessage) -> None:
            calls.append(message.deliveries)
            raise PoisonMessage("no such checkout request")

        await _publish(redis_client, keys[0], _event(10))
        async with running(_consumer(redis_client, keys, handle)):
            await eventually(lambda: redis_client.xlen(keys[1]))
        assert calls == [1]
        [dead] = await dead_letters(redis_client, keys[1])
        assert "no such checkout request" in dead["error"]
        assert await pending_count(redis_client, keys[0]) == 0

    async def test_raw_streams_are_read_without_a_decoder(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        seen: list[StreamMessage] = []

        async def handle(message: StreamMessage) -> None:
            seen.append(message)

        entry_id = _text(await redis_client.xadd(keys[0], {"callback_id": "42", "transaction_id": "T1"}))
        async with running(_consumer(redis_client, keys, handle, decode_events=False)):
            await eventually(lambda: len(seen) == 1)
        [message] = seen
        assert message.event is None
        assert message.fields == {"callback_id": "42", "transaction_id": "T1"}
        assert message.transaction_id == "T1"
        assert message.dedupe_key == f"entry:{keys[0]}:{entry_id}"


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


class TestCrashedConsumers:
    async def test_a_consumer_killed_mid_handler_has_its_message_reclaimed_and_handled_exactly_once(
        self, redis_client: aioredis.Redis, keys: tuple[str, str], db: Database
    ) -> None:
        """The first consumer commits its work and is killed before XACK; the second reclaims the message, sees
        the processed-message record and does nothing more: one effect in all."""
        group = f"testers-{secrets.token_hex(4)}"
        effects: list[str] = []
        committed = asyncio.Event()

        def handler(name: str, *, die_after_commit: bool) -> Handler:
            async def handle(message: StreamMessage) -> None:
                async with db.uow() as uow:
                    if await uow.processed.mark(group, message.dedupe_key, uow.now):
                        effects.append(name)
                    await uow.commit()
                if die_after_commit:
                    committed.set()
                    await asyncio.Event().wait()  # hangs until the process is "killed"

            return handle

        await _publish(redis_client, keys[0], _event(11))
        doomed = _consumer(redis_client, keys, handler("a", die_after_commit=True), name="a", group=group)
        task = asyncio.create_task(doomed.run(asyncio.Event()))
        await asyncio.wait_for(committed.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await _pending(redis_client, keys[0], group) == 1  # committed, never acknowledged

        survivor = _consumer(redis_client, keys, handler("b", die_after_commit=False), name="b", group=group)
        async with running(survivor):
            await eventually(lambda: _zero(_pending(redis_client, keys[0], group)))
        assert effects == ["a"]
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(processed_messages)
                    .where(processed_messages.c.consumer_group == group)
                )
            ).scalar_one()
        assert rows == 1

    async def test_a_message_a_dead_consumer_never_acknowledged_is_reclaimed_and_handled(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        seen: list[tuple[str, int]] = []

        async def handle(message: StreamMessage) -> None:
            seen.append((message.id, message.deliveries))

        [entry_id] = await _publish(redis_client, keys[0], _event(12))
        consumer = _consumer(redis_client, keys, handle, name="alive")
        await consumer.ensure_group()
        # A "ghost" consumer reads it and dies without acknowledging.
        await redis_client.xreadgroup("testers", "ghost", {keys[0]: ">"}, count=1)
        async with running(consumer):
            await eventually(lambda: len(seen) == 1)
        assert seen == [(entry_id, 2)]
        assert await pending_count(redis_client, keys[0]) == 0

    async def test_a_message_delivered_too_often_without_an_acknowledgement_is_dead_lettered(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        """Consumers that keep dying on a message (each delivery ends in a crash, not an exception) must not
        cycle it forever."""
        handled: list[StreamMessage] = []

        async def handle(message: StreamMessage) -> None:
            handled.append(message)

        [entry_id] = await _publish(redis_client, keys[0], _event(13))
        consumer = _consumer(redis_client, keys, handle, name="alive", max_deliveries=2)
        await consumer.ensure_group()
        await redis_client.xreadgroup("testers", "ghost", {keys[0]: ">"}, count=1)
        await redis_client.xclaim(keys[0], "testers", "ghost2", min_idle_time=0, message_ids=[entry_id])
        async with running(consumer):
            await eventually(lambda: redis_client.xlen(keys[1]))
        assert handled == []
        [dead] = await dead_letters(redis_client, keys[1])
        assert (dead["original_id"], dead["deliveries"]) == (entry_id, "3")
        assert "without being acknowledged" in dead["error"]
        assert await pending_count(redis_client, keys[0]) == 0


async def _pending(redis: aioredis.Redis, key: str, group: str) -> int:
    return int((await redis.xpending(key, group))["pending"])


class TestScaling:
    async def test_two_consumers_in_one_group_split_the_work_and_handle_each_message_once(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        handled: dict[str, list[int]] = {"one": [], "two": []}

        def handler(name: str) -> Handler:
            async def handle(message: StreamMessage) -> None:
                assert message.event is not None
                await asyncio.sleep(0.005)
                handled[name].append(int(message.event.event_id or 0))

            return handle

        await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 41)))
        one = _consumer(redis_client, keys, handler("one"), name="one", batch=2)
        two = _consumer(redis_client, keys, handler("two"), name="two", batch=2)
        async with running(one), running(two):
            await eventually(lambda: len(handled["one"]) + len(handled["two"]) == 40)
        assert sorted(handled["one"] + handled["two"]) == list(range(1, 41))
        assert handled["one"]
        assert handled["two"]


class TestGracefulStop:
    async def test_stop_finishes_the_message_in_hand_and_leaves_the_rest_to_others(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        """One slot: the consumer reads only what it can start, so on stop the rest was never taken from the
        stream and the next consumer reads it as new."""
        started = asyncio.Event()
        release = asyncio.Event()
        finished: list[int] = []

        async def slow(message: StreamMessage) -> None:
            started.set()
            await release.wait()
            finished.append(int(message.event.event_id or 0) if message.event else 0)

        await _publish(redis_client, keys[0], _event(1), _event(2), _event(3))
        consumer = _consumer(redis_client, keys, slow, name="leaving", concurrency=1, claim_idle_ms=60_000)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(started.wait(), 5)
        stop.set()
        await asyncio.sleep(0.05)
        assert not task.done()  # still finishing the message in hand
        assert await pending_count(redis_client, keys[0]) == 1  # and it read no more than it could start
        release.set()
        await asyncio.wait_for(task, 5)
        assert finished == [1]

        rest: list[int] = []

        async def quick(message: StreamMessage) -> None:
            rest.append(int(message.event.event_id or 0) if message.event else 0)

        successor = _consumer(redis_client, keys, quick, name="successor", claim_idle_ms=60_000)
        async with running(successor):
            await eventually(lambda: len(rest) == 2, timeout_s=3)
        assert sorted(rest) == [2, 3]
        assert await pending_count(redis_client, keys[0]) == 0

    async def test_an_idle_consumer_stops_promptly(self, redis_client: aioredis.Redis, keys: tuple[str, str]) -> None:
        async def handle(message: StreamMessage) -> None:
            return None

        consumer = _consumer(redis_client, keys, handle, block_ms=200)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 1)


class Overlap:
    """Counts handlers running at once, and holds each one until released."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self.done: list[int] = []
        self.release = asyncio.Event()

    async def handle(self, message: StreamMessage) -> None:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        self.done.append(int(message.event.event_id or 0) if message.event else 0)


async def _pending_entries(redis: aioredis.Redis, key: str) -> dict[str, dict[str, Any]]:
    rows = await redis.xpending_range(key, "testers", min="-", max="+", count=1000)
    return {_text(row["message_id"]): row for row in rows}


class TestConcurrency:
    async def test_slow_handlers_run_at_the_same_time(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        overlap = Overlap()
        await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 9)))
        async with running(_consumer(redis_client, keys, overlap.handle)):
            await eventually(lambda: overlap.active == 8)  # all eight started before any finished
            overlap.release.set()
            await eventually(lambda: len(overlap.done) == 8)
            await eventually(lambda: _zero(pending_count(redis_client, keys[0])))
        assert overlap.most == 8
        assert sorted(overlap.done) == list(range(1, 9))

    async def test_no_more_than_concurrency_run_or_are_read_at_once(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        overlap = Overlap()
        await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 11)))
        consumer = _consumer(redis_client, keys, overlap.handle, concurrency=4)
        async with running(consumer):
            await eventually(lambda: overlap.active == 4)
            # every slot is taken: it reads nothing more until one frees (the other six are not even delivered)
            await asyncio.sleep(0.2)
            assert consumer.in_flight == 4
            assert await pending_count(redis_client, keys[0]) == 4
            overlap.release.set()
            await eventually(lambda: len(overlap.done) == 10)
        assert overlap.most == 4
        assert sorted(overlap.done) == list(range(1, 11))

    async def test_an_entry_is_acknowledged_only_after_its_handler_returned(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        release = asyncio.Event()
        running_ids: list[str] = []
        pending_while_running: list[bool] = []

        async def handle(message: StreamMessage) -> None:
            running_ids.append(message.id)
            pending_while_running.append(message.id in await _pending_entries(redis_client, keys[0]))
            await release.wait()
            if message.event is not None and message.event.event_id == 3:
                raise RuntimeError("this one fails")

        ids = await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 6)))
        async with running(_consumer(redis_client, keys, handle, claim_idle_ms=60_000)):
            await eventually(lambda: len(running_ids) == 5)
            assert set(await _pending_entries(redis_client, keys[0])) == set(ids)  # none acknowledged yet
            release.set()
            await eventually(lambda: _one(pending_count(redis_client, keys[0])))
        assert pending_while_running == [True] * 5
        [left] = (await _pending_entries(redis_client, keys[0])).values()
        assert (_text(left["message_id"]), left["times_delivered"]) == (ids[2], 1)  # the failed one, still pending

    @pytest.mark.parametrize("concurrency", [1, 4])
    async def test_a_failing_message_does_not_hold_up_the_others(
        self, redis_client: aioredis.Redis, keys: tuple[str, str], concurrency: int
    ) -> None:
        """The consumer used to pause after any failure; now only an outage pauses it. The backoff here would stall
        the test for an hour if it were taken."""
        pauses: list[int] = []

        def backoff(failures: int) -> float:
            pauses.append(failures)
            return 3600.0

        handled: list[int] = []

        async def handle(message: StreamMessage) -> None:
            assert message.event is not None
            if message.event.event_id == 1:
                raise ConnectionError("Daraja hiccup")
            handled.append(int(message.event.event_id or 0))

        [failing, *_] = await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 8)))
        consumer = _consumer(redis_client, keys, handle, concurrency=concurrency, claim_idle_ms=60_000, backoff=backoff)
        async with running(consumer):
            await eventually(lambda: len(handled) == 6)
            await eventually(lambda: _one(pending_count(redis_client, keys[0])))
        assert sorted(handled) == list(range(2, 8))
        assert pauses == []
        assert list(await _pending_entries(redis_client, keys[0])) == [failing]

    async def test_when_every_message_fails_the_consumer_pauses_and_probes_one_at_a_time(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        pauses: list[int] = []
        paused = asyncio.Event()

        def backoff(failures: int) -> float:
            pauses.append(failures)
            paused.set()
            return 3600.0

        calls: list[int] = []

        async def handle(message: StreamMessage) -> None:
            calls.append(int(message.event.event_id or 0) if message.event else 0)
            raise ConnectionError("Deriv gateway down")

        await _publish(redis_client, keys[0], *(_event(n) for n in range(1, 21)))
        consumer = _consumer(
            redis_client, keys, handle, concurrency=3, outage_after=3, claim_idle_ms=60_000, backoff=backoff
        )
        async with running(consumer):
            await asyncio.wait_for(paused.wait(), 5)
            # paused (for an "hour") after three failures in a row: nothing more was read meanwhile
            assert await pending_count(redis_client, keys[0]) == len(calls)
        assert pauses == [1]
        assert 3 <= len(calls) <= 5  # the three that failed, and at most the slots' worth read beside them

    async def test_an_entry_reclaimed_from_itself_while_its_handler_runs_is_not_started_twice(
        self, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        overlap = Overlap()
        [entry_id] = await _publish(redis_client, keys[0], _event(1))
        async with running(_consumer(redis_client, keys, overlap.handle)):  # claim_idle_ms is short here
            await eventually(lambda: overlap.active == 1)

            async def reclaimed() -> bool:
                entry = (await _pending_entries(redis_client, keys[0])).get(entry_id)
                return entry is not None and int(entry["times_delivered"]) >= 2

            await eventually(reclaimed)  # XAUTOCLAIM took it over again (from this very consumer)
            assert overlap.active == 1
            overlap.release.set()
            await eventually(lambda: _zero(pending_count(redis_client, keys[0])))
        assert overlap.done == [1]
        assert overlap.most == 1


async def _one(count: Awaitable[int]) -> bool:
    return await count == 1


class TestGracefulStopWithHandlersInFlight:
    async def test_stop_waits_for_the_handlers_in_flight_and_hands_back_what_it_read_but_did_not_start(
        self, redis_url: str, redis_client: aioredis.Redis, keys: tuple[str, str]
    ) -> None:
        name = f"leaving-{secrets.token_hex(4)}"
        own = aioredis.from_url(redis_url, client_name=name)
        try:
            overlap = Overlap()
            [first] = await _publish(redis_client, keys[0], _event(1))
            consumer = _consumer(
                own, keys, overlap.handle, name="leaving", concurrency=3, claim_idle_ms=60_000, block_ms=30_000
            )
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(stop))
            await eventually(lambda: overlap.active == 1)

            async def blocked_reading() -> bool:
                clients = await redis_client.client_list()
                return any(
                    c.get("name") == name and c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
                    for c in clients
                )

            await eventually(blocked_reading)  # waiting in XREADGROUP for two more, beside the one in flight
            stop.set()
            async with redis_client.pipeline(transaction=True) as both:  # one MULTI: the blocked read gets both
                for event in (_event(2), _event(3)):
                    both.xadd(keys[0], stream_codec.encode(event))  # type: ignore[arg-type]
                rest = [_text(i) for i in await both.execute()]
            await eventually(lambda: _handed_back(redis_client, keys[0], rest))
            entries = await _pending_entries(redis_client, keys[0])
            assert all(int(entries[i]["time_since_delivered"]) >= 60_000 for i in rest)  # handed back: idle
            assert first in entries  # still being handled: not acknowledged
            assert not task.done()  # the first is still in flight, so run has not returned
            assert overlap.done == []

            overlap.release.set()
            await asyncio.wait_for(task, 5)
            assert overlap.done == [1]
            assert set(await _pending_entries(redis_client, keys[0])) == set(rest)  # the first was acknowledged
        finally:
            await own.aclose()

        successor_saw: list[int] = []

        async def quick(message: StreamMessage) -> None:
            successor_saw.append(int(message.event.event_id or 0) if message.event else 0)

        async with running(_consumer(redis_client, keys, quick, name="successor", claim_idle_ms=60_000)):
            await eventually(lambda: len(successor_saw) == 2, timeout_s=3)
        assert sorted(successor_saw) == [2, 3]
        assert await pending_count(redis_client, keys[0]) == 0


async def _handed_back(redis: aioredis.Redis, key: str, ids: list[str]) -> bool:
    entries = await _pending_entries(redis, key)
    return all(i in entries and int(entries[i]["time_since_delivered"]) >= 60_000 for i in ids)
