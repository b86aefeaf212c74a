"""The worker's /healthz, /readyz and /metrics (``worker.health`` served by ``health_http``) against the real Redis
and MariaDB: readiness follows the consumers, the metrics say what was handled, what failed, the backlog and the
dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.stream_consumer import PoisonMessage, StreamConsumer, StreamMessage
from penpay.health_http import HealthServer
from penpay.worker.health import WorkerHealth
from tests.integration.test_stream_consumer import _consumer, _event, _publish, eventually, keys
from tests.prometheus_text import samples

pytestmark = pytest.mark.integration
__all__ = ["keys"]  # the fixture, used here


@contextlib.asynccontextmanager
async def served(health: WorkerHealth) -> AsyncIterator[httpx.AsyncClient]:
    server = HealthServer(host="127.0.0.1", port=0, ready=health.ready, metrics=health.metrics)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield client
    finally:
        await server.stop()


async def test_ready_while_consuming_and_the_metrics_count_handled_failed_dead_lettered_and_the_backlog(
    redis_client: aioredis.Redis, engine: AsyncEngine, keys: tuple[str, str]
) -> None:
    async def handle(message: StreamMessage) -> None:
        if message.event is not None and message.event.event_id == 3:
            raise PoisonMessage("no such transaction")

    consumer: StreamConsumer = _consumer(redis_client, keys, handle)
    health = WorkerHealth(consumers=[consumer], redis=redis_client, engine=engine, dead_letter_key=keys[1], block_ms=50)
    labels = (("group", "testers"), ("stream", keys[0]))
    async with served(health) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # not consuming yet

        await _publish(redis_client, keys[0], _event(1), _event(2), _event(3))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            await eventually(lambda: consumer.handled == 2 and consumer.dead_lettered == 1)
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ready": True})
            page = await client.get("/metrics")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
            got = samples(page.text)
            assert got[("penpay_worker_messages_handled_total", labels)] == 2
            assert got[("penpay_worker_handler_failures_total", labels)] == 1
            assert got[("penpay_worker_messages_dead_lettered_total", labels)] == 1
            assert got[("penpay_worker_consumer_up", labels)] == 1
            assert got[("penpay_stream_lag", labels)] == 0
            assert got[("penpay_dead_letter_entries", ())] == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

        await _publish(redis_client, keys[0], _event(4), _event(5))  # nobody consuming: the backlog grows
        assert (await client.get("/readyz")).status_code == 503
        got = samples((await client.get("/metrics")).text)
        assert got[("penpay_stream_lag", labels)] == 2
        assert got[("penpay_stream_pending", labels)] == 0
        assert got[("penpay_worker_consumer_up", labels)] == 0


async def test_a_readiness_check_that_fails_or_hangs_is_answered_503_not_left_open() -> None:
    async def broken() -> bool:
        raise ConnectionError("MySQL went away")

    async def metrics() -> bytes:
        await asyncio.sleep(60)
        return b""

    server = HealthServer(host="127.0.0.1", port=0, ready=broken, metrics=metrics, answer_timeout_s=0.2)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=15) as client:
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/metrics")).status_code == 503  # after the answer's timeout
            assert (await client.get("/nowhere")).status_code == 404
    finally:
        await server.stop()


async def test_a_worker_of_background_passes_only_is_ready_when_mysql_and_redis_answer(
    redis_client: aioredis.Redis, engine: AsyncEngine, keys: tuple[str, str]
) -> None:
    health = WorkerHealth(consumers=[], redis=redis_client, engine=engine, dead_letter_key=keys[1], block_ms=50)
    assert await health.ready()
    assert ("penpay_dead_letter_entries", ()) in samples((await health.metrics()).decode())
