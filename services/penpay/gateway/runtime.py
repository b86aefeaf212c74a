"""The gateway's lifecycle: hot standby until the lease is won, then Deriv socket + balance tracker + serving.

The gRPC server and the health HTTP listen from the start, so a standby answers UNAVAILABLE and reports
NOT_SERVING / 503 (a load balancer routes only to the active one). Winning the lease starts the Deriv connection;
losing it stops the connection and money calls at once, and the instance goes back to waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from penpay._proto.penpay.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from penpay.gateway.balances import BalanceTracker
from penpay.gateway.connection import DerivConnection
from penpay.gateway.lease import RedisLease
from penpay.gateway.metrics import GatewayMetrics
from penpay.gateway.service import DerivGatewayService
from penpay.health_http import HealthServer
from penpay.logging import get_logger

log = get_logger(__name__)
# grpc_health's type stubs lack its asyncio servicer (grpc_health.v1.health.aio).
_health_aio: Any = importlib.import_module("grpc_health.v1.health").aio
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["DerivGateway"].full_name


class GatewayRuntime:
    def __init__(
        self,
        *,
        service: DerivGatewayService,
        lease: RedisLease,
        connection: DerivConnection,
        balances: BalanceTracker,
        grpc_addr: str,
        health_host: str,
        health_port: int,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self.service = service
        self.lease = lease
        self.connection = connection
        self.balances = balances
        self._grpc_addr = grpc_addr
        self._shutdown_grace_s = shutdown_grace_s
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._health = _health_aio.HealthServicer()
        self.metrics = GatewayMetrics(service=service, lease=lease, connection=connection, balances=balances)
        self.health_http = HealthServer(
            host=health_host, port=health_port, ready=lambda: self.service.active, metrics=self.metrics.render
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.grpc_port = 0

    async def start(self) -> None:
        gateway_pb2_grpc.add_DerivGatewayServicer_to_server(self.service, self._server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.grpc_port = self._server.add_insecure_port(self._grpc_addr)
        await self._server.start()
        await self.health_http.start()
        await self._publish_health(serving=False)
        self._tasks = [asyncio.create_task(self._supervise()), asyncio.create_task(self._watch_health())]
        log.info("gateway.started", grpc_port=self.grpc_port, health_port=self.health_http.port)

    async def stop(self) -> None:
        """Graceful: refuse new calls, let in-flight ones finish (grace), drop the socket, release the lease."""
        self._stop.set()
        await self._publish_health(serving=False)
        await self._server.stop(self._shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.connection.stop()
        await self.lease.release()
        await self.health_http.stop()
        log.info("gateway.stopped")

    async def wait_active(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for _ in iter(lambda: self.service.active or time.monotonic() > deadline, True):
            await asyncio.sleep(0.02)
        return self.service.active

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            if not await self.lease.acquire(self._stop):
                return
            connection = asyncio.create_task(self.connection.run())
            publisher = asyncio.create_task(self.balances.run())
            try:
                await self.lease.hold(self._stop)
            finally:
                await self.connection.stop()
                for task in (connection, publisher):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if not self._stop.is_set():
                log.error("gateway.demoted_to_standby", fence=self.lease.fencing_token)

    async def _watch_health(self) -> None:
        serving: bool | None = None
        while True:
            active = self.service.active
            if active != serving:
                serving = active
                await self._publish_health(serving=active)
                log.info("gateway.serving" if active else "gateway.not_serving")
            await asyncio.sleep(0.1)

    async def _publish_health(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)
