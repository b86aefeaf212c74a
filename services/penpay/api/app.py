"""The API's composition root: ``create_app(settings, adapters=None)``.

With ``adapters`` (tests), the app uses them as given and needs no startup. Without, its lifespan builds the real
ones from settings (MySQL engine, Redis client with timeouts, the Deriv gateway's gRPC client, the static FX
provider) and closes them at shutdown. Nothing connects at import or at ``create_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from penpay.adapters.fx import StaticFxQuotes
from penpay.adapters.redis_client import connect
from penpay.api import problems
from penpay.api.deps import Adapters, ApiState
from penpay.api.hot_path import HotRoutes, PenPayApi
from penpay.api.middleware import ApiMiddleware, Metrics
from penpay.api.routes import admin, deposits, deriv_link, fx, health, mpesa, transactions, withdrawals
from penpay.bootstrap import database
from penpay.settings import Settings

REDIS_TIMEOUT_S = 5.0


@asynccontextmanager
async def real_adapters(settings: Settings) -> AsyncIterator[Adapters]:
    from penpay.adapters.deriv_gateway import GrpcDerivGateway  # noqa: PLC0415 - needs the generated gRPC code

    redis = connect(
        settings.redis_url,
        pool_size=settings.redis_pool_size,
        timeout_s=REDIS_TIMEOUT_S,
        socket_timeout_s=REDIS_TIMEOUT_S,
    )
    gateway = GrpcDerivGateway(settings.gateway_grpc_addr)
    try:
        # no prepared statements here: the API's hot statements go as scripts (text), and the rest change shape
        # with each batch's size, so a statement cache would only prepare and drop them (measured: -4 % accepted/s)
        async with database(settings, statement_cache=0) as db:
            yield Adapters(db=db, redis=redis, fx=StaticFxQuotes.from_settings(settings), gateway=gateway)
    finally:
        await gateway.close()
        await redis.aclose()


def create_app(settings: Settings, adapters: Adapters | None = None, *, hot_path: bool = True) -> FastAPI:
    """The API. ``hot_path=False`` serves every route through FastAPI's own stack (``api.hot_path``; the tests that
    compare the two paths use it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if adapters is not None:
            yield
            return
        async with real_adapters(settings) as built:
            state = ApiState.build(settings, built)
            app.state.penpay = state
            try:
                yield
            finally:
                await state.aclose()

    app = PenPayApi(
        title="PenPay API",
        version="1.0.0",
        summary="M-Pesa <-> Deriv deposits and withdrawals",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
        # PenPay exports its own Prometheus metrics (``api.middleware``); FastAPI's OpenTelemetry hooks would
        # otherwise look up the global providers (and the environment) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = Metrics()
    if adapters is not None:
        app.state.penpay = ApiState.build(settings, adapters)
    problems.install(app)
    routers = (
        deposits.router,
        withdrawals.router,
        transactions.router,
        fx.router,
        deriv_link.router,
        admin.router,
        health.router,
        mpesa.build_router(settings.callback_public_prefix),
    )
    for router in routers:
        app.include_router(router)  # no prefix: a route's path is its path in the app (HotRoutes matches it)
    if hot_path:
        app.hot_routes = HotRoutes(route for router in routers for route in router.routes)
    public = "/" + settings.callback_public_prefix.strip("/") + "/"
    app.add_middleware(ApiMiddleware, metrics=app.state.metrics, exempt_prefixes=("/mpesa/", public))
    return app
