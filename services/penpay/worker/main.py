"""``penpay-worker``: the composition root of the worker process.

    penpay-worker                          every worker type in one process
    penpay-worker --workers steps          the stream consumers (deposit, deriv, withdrawal, notifier, callbacks)
    penpay-worker --workers sweeps         the background passes (relay, reconciler, auditor)
    penpay-worker --workers deposit,deriv  a subset; run several processes of a type to split its work

`make run` (the Procfile) and the compose file run ``all`` in one process. On machines with cores to spare, the
sweeps can run apart (``steps`` and ``sweeps``), so that their passes (the auditor chains up to a thousand rows at a
time) never hold up a step's batch; a process of sweeps only lowers its own CPU priority (``priority.py``). On two
shared cores the split measured better end to end in the dev loop but worse in ``make bench``'s API phases and its
two-worker phase (docs/performance.md, round 9), so it is not the default.

Worker types: deposit (STK pushes), deriv (Deriv credits and reversals), withdrawal (Deriv debits, B2C payouts and
refunds), callbacks (stored M-Pesa callbacks), notifier (e-mail), relay (the outbox relay), reconciler (the sweep),
auditor (links committed audit rows into the hash chain).
SIGTERM/SIGINT: stop reading, finish the messages in flight (up to PENPAY_WORKER_CONCURRENCY per stream), hand back
the ones read but not started, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from functools import partial
from types import TracebackType

import redis.asyncio as aioredis

from penpay import eventloop
from penpay.adapters.daraja.client import DarajaClient
from penpay.adapters.daraja.mpesa import DarajaMpesa
from penpay.adapters.daraja.token_store import RedisTokenStore
from penpay.adapters.db.housekeeping import SqlExpiredRows
from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.db.outbox import PublishedMarks
from penpay.adapters.db.unit_of_work import with_retries
from penpay.adapters.deriv_gateway import GrpcDerivGateway
from penpay.adapters.mailer import SmtpMailer
from penpay.adapters.mpesa_callbacks import DarajaCallbackDecoder
from penpay.adapters.redis_client import connect
from penpay.adapters.stream_codec import DEAD_LETTER, stream_key
from penpay.adapters.stream_consumer import StreamConsumer
from penpay.adapters.streams import MPESA_CALLBACKS_STREAM, RedisStreamPublisher
from penpay.adapters.tokens import SecretBox
from penpay.bootstrap import Database, database
from penpay.gc_tuning import settle_heap
from penpay.health_http import HealthServer
from penpay.logging import configure_logging, get_logger
from penpay.priority import yield_to_foreground
from penpay.service_layer.background import BoundedTasks
from penpay.service_layer.callbacks import CallbackUrls
from penpay.service_layer.flow import FlowDeps
from penpay.service_layer.handlers import SUBSCRIPTIONS
from penpay.service_layer.housekeeping import ExpiredRows, Retention, tidy
from penpay.service_layer.publishing import publish_quietly
from penpay.service_layer.reconciliation import sweep
from penpay.settings import Settings
from penpay.worker.health import WorkerHealth
from penpay.worker.relay import run_relay
from penpay.worker.subscriptions import callback_handler, event_handler
from penpay_domain.events import TransactionEvent

log = get_logger(__name__)

# batches of carried credits at once (the callback worker's, service_layer.background): one overlaps the next
# batch of callbacks; more measured no better (docs/performance.md, round 9)
CARRIED_CREDIT_BATCHES = 2
REDIS_WAIT_S = 5.0  # how long a command waits for a free connection of the pool
STEPS = (*SUBSCRIPTIONS, "callbacks")  # the stream consumers: each transaction's steps
SWEEPS = ("relay", "reconciler", "auditor")  # the background passes over the database
WORKER_TYPES = (*STEPS, *SWEEPS)
# names for several types at once (`--workers steps`, `--workers sweeps`: the two halves of `all`)
GROUPS = {"all": WORKER_TYPES, "steps": STEPS, "sweeps": SWEEPS}


def parse_workers(text: str) -> list[str]:
    """Worker types, and groups of them (``all``, ``steps``, ``sweeps``), comma-separated; empty means all."""
    names = [w.strip() for w in text.split(",") if w.strip()] or ["all"]
    unknown = sorted(set(names) - set(WORKER_TYPES) - set(GROUPS))
    if unknown:
        raise ValueError(
            f"unknown worker type(s) {', '.join(unknown)}; choose from {', '.join(WORKER_TYPES)}, "
            f"or the groups {', '.join(GROUPS)}"
        )
    chosen = [t for name in names for t in GROUPS.get(name, (name,))]
    return list(dict.fromkeys(chosen))


class PublishingUnitOfWork(SqlIntakeUnitOfWork):
    """The worker's unit of work: right after a commit, its events go to the streams, so the next step starts at
    once instead of waiting for the outbox relay (which still publishes anything this misses).

    It publishes on leaving the ``async with``, once its connection is back in the pool: with many handlers in
    flight, none holds a MySQL connection while it waits for Redis."""

    def __init__(self, db: Database, box: SecretBox, publisher: RedisStreamPublisher) -> None:
        super().__init__(db.engine, db.clock, box, actor="worker")
        self._publisher = publisher
        self._committed: list[TransactionEvent] = []

    async def commit(self, *, carried: Collection[str] = ()) -> list[TransactionEvent]:
        events = await super().commit(carried=carried)
        self._committed.extend(e for e in events if e.name not in carried)
        return events

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            events, self._committed = self._committed, []
            if events:  # committed, whatever happened after: the events are in the outbox either way
                await publish_quietly(self._publisher, events)


@contextlib.asynccontextmanager
async def _flow_deps(settings: Settings, db: Database, redis: aioredis.Redis) -> AsyncIterator[FlowDeps]:
    box = SecretBox.from_settings(settings)
    daraja = DarajaClient.from_settings(
        settings, token_store=RedisTokenStore(redis, key=stream_key(settings.stream_prefix, "daraja:oauth"))
    )
    gateway = GrpcDerivGateway(settings.gateway_grpc_addr)

    # The stamps of many steps' outbox rows go in one UPDATE and one commit (a lost stamp only means the relay
    # publishes the row again, and consumers deduplicate on its event id).
    marks = PublishedMarks(db.engine, db.clock)
    publisher = RedisStreamPublisher(redis, prefix=settings.stream_prefix, mark_published=marks.add)
    try:
        yield FlowDeps(
            uow=lambda: PublishingUnitOfWork(db, box, publisher),
            mpesa=DarajaMpesa(daraja),
            deriv=gateway,
            mailer=SmtpMailer.from_settings(settings),
            clock=db.clock,
            publish=partial(publish_quietly, publisher),
            callback_urls=CallbackUrls(
                base_url=settings.public_base_url,
                prefix=settings.callback_public_prefix,
                secret=settings.callback_secret.get_secret_value(),
            ),
            reconcile_after=timedelta(seconds=settings.reconcile_after_s),
            ops_email=settings.ops_email,
            retry=with_retries,
        )
    finally:
        await marks.aclose()
        await gateway.close()
        await daraja.aclose()


async def _reconcile_forever(deps: FlowDeps, expired: ExpiredRows, retention: Retention, stop: asyncio.Event) -> None:
    interval = max(1.0, deps.reconcile_after.total_seconds() / 3)
    while not stop.is_set():
        try:
            done = await sweep(deps)
            if done:
                log.info("reconciled", **{k.replace(" ", "_"): v for k, v in done.items()})
        except Exception as exc:  # the sweep must outlive any one failure; the next pass tries again
            log.warning("reconcile_failed", error=repr(exc))
        try:
            tidied = await tidy(expired, deps.clock.now(), retention)
            if tidied:
                log.info("housekeeping", deleted=tidied)
        except Exception as exc:  # as the sweep: the next pass tries again
            log.warning("housekeeping_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _chain_audit_forever(db: Database, stop: asyncio.Event, interval_s: float = 0.2) -> None:
    """Link committed audit rows into the hash chain; a full batch is followed at once by the next."""
    while not stop.is_set():
        chained = 0
        try:
            async with db.uow(actor="auditor") as uow:
                chained = await uow.audit.chain_pending(limit=1000)
                await uow.commit()
        except Exception as exc:  # MySQL away: try again on the next tick
            log.warning("audit_chain_failed", error=repr(exc))
        if chained < 1000:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def run(settings: Settings, workers: Sequence[str], stop: asyncio.Event) -> None:
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"
    redis = connect(
        settings.redis_url,
        pool_size=settings.redis_pool_size,
        timeout_s=REDIS_WAIT_S,
        socket_timeout_s=settings.worker_block_ms / 1000 + 10,  # longer than a blocking XREADGROUP
    )
    try:
        async with database(settings) as db, _flow_deps(settings, db, redis) as deps:
            tasks: list[Callable[[], Awaitable[None]]] = []
            consumers: list[StreamConsumer] = []
            carries = BoundedTasks(CARRIED_CREDIT_BATCHES, name="carried-credits")

            def consumer(stream: str, group: str, handle: Callable[..., Awaitable[None]], *, events: bool) -> None:
                c = StreamConsumer(
                    redis,
                    stream_key=stream_key(settings.stream_prefix, stream),
                    group=group,
                    consumer_name=consumer_name,
                    handle=handle,
                    dead_letter_key=stream_key(settings.stream_prefix, DEAD_LETTER),
                    decode_events=events,
                    concurrency=settings.worker_concurrency,
                    block_ms=settings.worker_block_ms,
                    claim_idle_ms=settings.worker_claim_idle_ms,
                    max_deliveries=settings.worker_max_deliveries,
                )
                consumers.append(c)
                tasks.append(lambda: c.run(stop))

            batch = settings.worker_concurrency  # a batch may take every message in flight on its stream
            linger_s = settings.worker_linger_ms / 1000
            retention = Retention(
                dedupe=timedelta(days=settings.dedupe_retention_days),
                outbox=timedelta(days=settings.outbox_retention_days),
            )
            for name in workers:
                if name in SUBSCRIPTIONS:
                    sub = SUBSCRIPTIONS[name]
                    consumer(
                        sub.stream, sub.group, event_handler(sub, deps, max_batch=batch, linger_s=linger_s), events=True
                    )
                elif name == "callbacks":
                    consumer(
                        MPESA_CALLBACKS_STREAM,
                        "callbacks",
                        callback_handler(
                            deps, DarajaCallbackDecoder(), max_batch=batch, linger_s=linger_s, carries=carries
                        ),
                        events=False,
                    )
                elif name == "relay":
                    tasks.append(lambda: run_relay(db, redis, stop, prefix=settings.stream_prefix))
                elif name == "reconciler":
                    tasks.append(lambda: _reconcile_forever(deps, SqlExpiredRows(db.engine), retention, stop))
                elif name == "auditor":
                    tasks.append(lambda: _chain_audit_forever(db, stop))
            health = WorkerHealth(
                consumers=consumers,
                redis=redis,
                engine=db.engine,
                dead_letter_key=stream_key(settings.stream_prefix, DEAD_LETTER),
                block_ms=settings.worker_block_ms,
            )
            async with _health_http(settings.health_host, settings.worker_health_port, health):
                log.info("worker_started", workers=list(workers), consumer=consumer_name)
                await asyncio.gather(*(t() for t in tasks))
                await carries.drain()  # the credits the callback batches answered before have their answers recorded
    finally:
        await redis.aclose()
    log.info("worker_stopped", consumer=consumer_name)


@contextlib.asynccontextmanager
async def _health_http(host: str, port: int, health: WorkerHealth) -> AsyncIterator[None]:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (port 0: none) while the worker runs. A port
    already taken (a second worker process on one host) is logged, and the process runs without one."""
    server = HealthServer(host=host, port=port, ready=health.ready, metrics=health.metrics)
    started = False
    if port:
        try:
            await server.start()
            started = True
        except OSError as exc:
            log.warning("health_port_unavailable", port=port, error=repr(exc))
    try:
        yield
    finally:
        if started:
            await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="penpay-worker", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", default="all", help=f"comma-separated: {', '.join(WORKER_TYPES)}, or all")
    args = parser.parse_args(argv)
    try:
        workers = parse_workers(args.workers)
    except ValueError as exc:
        sys.stderr.write(f"penpay-worker: {exc}\n")
        sys.exit(2)
    settings = Settings()
    configure_logging("worker", settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, workers, stop)

    settle_heap()
    if set(workers) <= set(SWEEPS):  # background passes only: the API's and the steps' CPU comes first
        log.info("background_priority", nice=yield_to_foreground())
    eventloop.run(_main())


if __name__ == "__main__":
    main()
