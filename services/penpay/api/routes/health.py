"""``/healthz`` (the process answers), ``/readyz`` (MySQL ``SELECT 1`` and Redis ``PING`` really succeed, each
within a short timeout; 503 otherwise) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from penpay.api.deps import State
from penpay.logging import get_logger

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0
log = get_logger(__name__)


@router.get("/healthz", summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="MySQL and Redis are reachable")
async def readyz(state: State) -> JSONResponse:
    async def mysql() -> None:
        async with state.adapters.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def redis() -> None:
        await state.adapters.redis.ping()

    checks: dict[str, str] = {}
    for name, probe in (("mysql", mysql), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), timeout=CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            log.warning("readiness check failed", check=name, error=type(exc).__name__)
            checks[name] = f"failed: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
