"""Fixtures for the Deriv contract tests: the real simulator on a free port, real Redis, in-process gateways.

Import the fixtures into a test module with ``from tests.contract.deriv_fixtures import *``-free explicit names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from penpay.adapters.deriv_gateway import GrpcDerivGateway
from penpay.gateway.main import Tuning, build_runtime
from penpay.gateway.runtime import GatewayRuntime
from penpay.sandbox.deriv import DerivSimulator
from penpay.settings import Settings
from tests.redis_keys import drop_keys

AGENT_TOKEN = "sandbox-agent-token-CR900000"
AGENT = "CR900000"
REDIS_URL = os.environ.get("PENPAY_REDIS_URL", "redis://127.0.0.1:6379/15")
FAST = Tuning(
    call_timeout_s=3.0,
    connect_timeout_s=2.0,
    ping_interval_s=5.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    rate_limit_retries=2,
    rate_limit_backoff_s=0.02,
    shutdown_grace_s=0.5,
)


def user_token(loginid: str) -> str:
    return f"sandbox-user-token-{loginid}"


def dumps(message: dict[str, Any]) -> str:
    """JSON with Decimal amounts written as exact numbers (the test client's own encoder)."""
    text = json.dumps(message, default=lambda value: f"__decimal__{value}")
    return re.sub(r'"__decimal__(-?[0-9.]+)"', r"\1", text)


class RawClient:
    """An independent Deriv client: plain ``websockets`` + JSON, answers matched by ``req_id``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next = 0
        self.pushed: list[dict[str, Any]] = []

    async def send(self, request: dict[str, Any]) -> int:
        """Send with the next req_id, or with the request's own ``req_id`` when it has one."""
        self._next += 1
        req_id = int(request.get("req_id", self._next))
        await self.ws.send(dumps({**request, "req_id": req_id}))
        return req_id

    async def recv(self, timeout_s: float = 3.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout_s)
        message: dict[str, Any] = json.loads(raw, parse_float=Decimal)
        return message

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send and wait for the answer to this req_id; other messages (streamed updates) go to ``pushed``."""
        req_id = await self.send(request)
        while True:
            message = await self.recv()
            if message.get("req_id") == req_id:
                return message
            self.pushed.append(message)


@pytest.fixture
async def sim() -> AsyncIterator[DerivSimulator]:
    simulator = DerivSimulator(agent_token=AGENT_TOKEN)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def raw(sim: DerivSimulator) -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    sockets: list[ClientConnection] = []

    async def open_client(token: str | None = None, *, query: str = "?app_id=1089&l=EN&brand=deriv") -> RawClient:
        ws = await connect(sim.url + query, open_timeout=3)
        sockets.append(ws)
        client = RawClient(ws)
        if token is not None:
            answer = await client.call({"authorize": token})
            assert "error" not in answer, answer
        return client

    yield open_client
    for ws in sockets:
        await ws.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A test's own Redis prefix; its keys (streams, and the gateway's records under ``{prefix:gateway}``) are
    deleted afterwards."""
    value = f"test-gw-{uuid.uuid4().hex[:12]}"
    yield value
    await drop_keys(REDIS_URL, value)


def gateway_settings(
    sim: DerivSimulator, prefix: str, *, reconcile_after_s: int = 60, client_sessions: int = 64
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=REDIS_URL,
        stream_prefix=prefix,
        deriv_ws_url=sim.url,
        deriv_agent_token=AGENT_TOKEN,  # type: ignore[arg-type]
        gateway_grpc_addr="127.0.0.1:0",
        gateway_health_port=0,
        gateway_lease_ttl_s=1,
        reconcile_after_s=reconcile_after_s,
        deriv_client_sessions=client_sessions,
    )


GatewayFactory = Callable[..., Awaitable[tuple[GatewayRuntime, GrpcDerivGateway]]]


@pytest.fixture
async def gateways(sim: DerivSimulator, redis: Redis, prefix: str) -> AsyncIterator[GatewayFactory]:
    """Start gateways (runtime + gRPC client); ``wait_active=False`` for a standby. All stopped at teardown."""
    started: list[tuple[GatewayRuntime, GrpcDerivGateway]] = []

    async def start(
        *, wait_active: bool = True, reconcile_after_s: int = 60, client_sessions: int = 64, tuning: Tuning = FAST
    ) -> tuple[GatewayRuntime, GrpcDerivGateway]:
        settings = gateway_settings(sim, prefix, reconcile_after_s=reconcile_after_s, client_sessions=client_sessions)
        runtime = build_runtime(settings, redis, tuning)
        await runtime.start()
        client = GrpcDerivGateway(f"127.0.0.1:{runtime.grpc_port}", timeout_s=5, money_timeout_s=10)
        started.append((runtime, client))
        if wait_active:
            assert await runtime.wait_active(5), "the gateway did not become active"
        return runtime, client

    yield start
    for runtime, client in started:
        await client.close()
        with contextlib.suppress(Exception):
            await runtime.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - polls state owned by another component
            await asyncio.sleep(0.02)
