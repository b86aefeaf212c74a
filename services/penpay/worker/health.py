"""The worker's readiness and metrics, served on ``PENPAY_WORKER_HEALTH_PORT`` by ``penpay.health_http``
(``/healthz``, ``/readyz``, ``/metrics``; ARCHITECTURE §1: every process exposes health and Prometheus metrics).

Ready: MySQL and Redis answer (``SELECT 1``, ``PING``) and every stream consumer of the process is consuming (its
loop runs, its last read returned within a few blocking reads, or all its slots are taken). A process of background
passes only (``--workers sweeps``) has no consumer: the two checks are its readiness.

Metrics, collected when scraped (nothing on the hot path but the consumers' own counts): per stream and group, the
entries handled, the handler failures and the dead-lettered ones (counters since the process started), the entries in
flight, whether the consumer is consuming; from Redis, the group's lag (entries not yet delivered to it: the
backlog) and its pending entries (delivered, not acknowledged: in flight anywhere, or waiting to be reclaimed); and
the dead-letter stream's length (entries a human should look at).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.stream_consumer import StreamConsumer

STALE_READS = 3  # a consumer is consuming while its last read returned within this many blocking reads (+ slack)
STALE_SLACK_S = 10.0


class WorkerHealth:
    def __init__(
        self,
        *,
        consumers: Sequence[StreamConsumer],
        redis: aioredis.Redis,
        engine: AsyncEngine,
        dead_letter_key: str,
        block_ms: int,
    ) -> None:
        self._consumers = consumers
        self._redis = redis
        self._engine = engine
        self._dead_letter_key = dead_letter_key
        self._stale_after_s = STALE_READS * block_ms / 1000 + STALE_SLACK_S

    def consuming(self) -> list[bool]:
        now = time.monotonic()
        return [c.alive(now, stale_after_s=self._stale_after_s) for c in self._consumers]

    async def ready(self) -> bool:
        if not all(self.consuming()):
            return False
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return bool(await self._redis.ping())

    async def metrics(self) -> bytes:
        groups, dead = await self._read_redis()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(list(self._families(groups, dead))))
        return generate_latest(registry)

    async def _read_redis(self) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
        """Each consumer's group as ``XINFO GROUPS`` reports it, and the dead-letter stream's length."""
        streams = sorted({c.stream_key for c in self._consumers})
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            pipe.xlen(self._dead_letter_key)
            replies = await pipe.execute(raise_on_error=False)
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for stream, reply in zip(streams, replies[:-1], strict=True):
            if isinstance(reply, list):  # an error (no such stream yet): nothing to report for it
                for info in reply:
                    groups[(stream, _text(info.get("name", "")))] = info
        dead = replies[-1] if isinstance(replies[-1], int) else 0
        return groups, dead

    def _families(self, groups: dict[tuple[str, str], dict[str, Any]], dead: int) -> Iterator[Metric]:
        labels = ["stream", "group"]
        handled = CounterMetricFamily(
            "penpay_worker_messages_handled", "Stream entries handled and acknowledged by this process", labels=labels
        )
        failed = CounterMetricFamily(
            "penpay_worker_handler_failures", "Handler runs that raised (the entry is retried later)", labels=labels
        )
        dead_lettered = CounterMetricFamily(
            "penpay_worker_messages_dead_lettered", "Entries this process dead-lettered", labels=labels
        )
        in_flight = GaugeMetricFamily("penpay_worker_in_flight", "Entries whose handler is running now", labels=labels)
        up = GaugeMetricFamily("penpay_worker_consumer_up", "1 while the consumer is consuming", labels=labels)
        lag = GaugeMetricFamily(
            "penpay_stream_lag", "Entries of the stream not yet delivered to the group (its backlog)", labels=labels
        )
        pending = GaugeMetricFamily(
            "penpay_stream_pending", "Entries delivered to the group and not yet acknowledged", labels=labels
        )
        for consumer, consuming in zip(self._consumers, self.consuming(), strict=True):
            key = [consumer.stream_key, consumer.group]
            handled.add_metric(key, consumer.handled)
            failed.add_metric(key, consumer.failed)
            dead_lettered.add_metric(key, consumer.dead_lettered)
            in_flight.add_metric(key, consumer.in_flight)
            up.add_metric(key, 1 if consuming else 0)
            info = groups.get((consumer.stream_key, consumer.group))
            if info is not None:
                if info.get("lag") is not None:  # Redis 7 says when it cannot tell (after deletions): then nothing
                    lag.add_metric(key, int(info["lag"]))
                pending.add_metric(key, int(info.get("pending", 0)))
        yield from (handled, failed, dead_lettered, in_flight, up, lag, pending)
        yield GaugeMetricFamily(
            "penpay_dead_letter_entries", "Entries in the dead-letter stream (each needs a human)", value=dead
        )


class _Snapshot(Collector):
    """Metric families computed before the registry renders them."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
