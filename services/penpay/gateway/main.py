"""``penpay-gateway``: the composition root of the Deriv gateway process (ARCHITECTURE §6)."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

from redis.asyncio import Redis

from penpay import eventloop
from penpay.adapters.redis_client import connect
from penpay.gateway.balances import BalanceTracker
from penpay.gateway.client_sessions import ClientSessions
from penpay.gateway.connection import DerivConnection
from penpay.gateway.lease import RedisLease
from penpay.gateway.records import ReferenceStore
from penpay.gateway.runtime import GatewayRuntime
from penpay.gateway.service import DerivGatewayService
from penpay.gateway.tokens import TokenVault
from penpay.gateway.transfers import TransferExecutor
from penpay.gc_tuning import settle_heap
from penpay.logging import configure_logging, get_logger
from penpay.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuning:
    """Timing knobs that are not deployment settings (tests shrink them)."""

    call_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    ping_interval_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    rate_limit_retries: int = 2
    rate_limit_backoff_s: float = 0.5
    shutdown_grace_s: float = 5.0
    client_session_wait_s: float = 5.0


def build_runtime(settings: Settings, redis: Redis, tuning: Tuning | None = None) -> GatewayRuntime:
    tuning = tuning or Tuning()
    prefix = settings.stream_prefix
    # One hash tag for the lease and the reference records: their Lua scripts touch both, so on Redis Cluster they
    # must share a slot (the gateway is a single instance, so one slot costs nothing).
    slot = f"{{{prefix}:gateway}}"
    lease = RedisLease(redis, key=f"{slot}:lease", ttl_s=settings.gateway_lease_ttl_s)
    tokens = TokenVault(settings.token_encryption_key.get_secret_value())
    balances = BalanceTracker(redis, stream_key=f"{prefix}:deriv:balance")
    connection = DerivConnection(
        url=settings.deriv_ws_url,
        app_id=settings.deriv_app_id,
        agent_token=settings.deriv_agent_token.get_secret_value(),
        call_timeout_s=tuning.call_timeout_s,
        connect_timeout_s=tuning.connect_timeout_s,
        ping_interval_s=tuning.ping_interval_s,
        backoff_initial_s=tuning.backoff_initial_s,
        backoff_max_s=tuning.backoff_max_s,
        on_subscription=balances.on_subscription,
        on_authorized=[balances.subscribe],
    )
    sessions = ClientSessions(
        connection.url,
        limit=settings.deriv_client_sessions,
        wait_s=tuning.client_session_wait_s,
        timeout_s=tuning.call_timeout_s,
    )
    executor = TransferExecutor(
        connection=connection,
        sessions=sessions,
        store=ReferenceStore(redis, key_prefix=slot, lease=lease),
        tokens=tokens,
        settle_after_s=float(settings.reconcile_after_s),
        rate_limit_retries=tuning.rate_limit_retries,
        rate_limit_backoff_s=tuning.rate_limit_backoff_s,
    )
    service = DerivGatewayService(
        executor=executor, balances=balances, connection=connection, sessions=sessions, lease=lease, tokens=tokens
    )
    return GatewayRuntime(
        service=service,
        lease=lease,
        connection=connection,
        balances=balances,
        grpc_addr=settings.gateway_grpc_addr,
        health_host=settings.health_host,
        health_port=settings.gateway_health_port,
        shutdown_grace_s=tuning.shutdown_grace_s,
    )


async def serve(settings: Settings) -> None:
    redis = connect(settings.redis_url, pool_size=settings.redis_pool_size, timeout_s=5.0, socket_timeout_s=5.0)
    runtime = build_runtime(settings, redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        await redis.aclose()


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    settle_heap()
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
