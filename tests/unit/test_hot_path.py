"""``api.hot_path``: directly served routes are dispatched ahead of FastAPI's stack and router, and answer exactly as
through them. Pure ASGI (an app with PenPay's middleware and problem handlers and a few routes of its own); the
real routes are compared with FastAPI's own handling in ``tests/integration/api/test_direct_route.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from penpay.api import problems
from penpay.api.direct_route import DirectRoute, json_body, served_directly
from penpay.api.hot_path import HotRoutes, HotSplit, PenPayApi
from penpay.api.middleware import ApiMiddleware, Metrics
from penpay.api.problems import ApiProblem

reached: list[str] = []


async def _body(request: Request) -> dict[str, Any]:
    return {"data": await json_body(request), "request": request}


async def _params(request: Request) -> dict[str, Any]:
    return {"ref": request.path_params["ref"], "request": request}


@served_directly(_body)
async def echo(data: Any, request: Request) -> Response:
    reached.append(str(request.scope.get("route").path))  # type: ignore[union-attr]
    if data == "refuse":
        raise ApiProblem(409, "refused_here", "refused by the endpoint")
    if data == "crash":
        raise RuntimeError("a bug")
    return JSONResponse({"echo": data}, status_code=202)


@served_directly(_params)
async def by_ref(ref: int, request: Request) -> Response:
    return JSONResponse({"ref": ref, "type": type(ref).__name__})


def build(*, hot: bool) -> PenPayApi:
    app = PenPayApi()
    problems.install(app)
    direct = APIRouter(route_class=DirectRoute)
    direct.add_api_route("/echo", echo, methods=["POST"])
    direct.add_api_route("/things/{ref:int}", by_ref, methods=["POST"])
    plain = APIRouter()

    @plain.get("/plain")
    async def plain_route() -> dict[str, str]:
        return {"plain": "yes"}

    app.include_router(direct)
    app.include_router(plain)
    app.add_middleware(ApiMiddleware, metrics=Metrics(), exempt_prefixes=("/mpesa/",))
    if hot:
        app.hot_routes = HotRoutes([*direct.routes, *plain.routes])
    return app


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    hot, framework = build(hot=True), build(hot=False)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=hot), base_url="http://t") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=framework), base_url="http://t") as b,
    ):
        yield a, b
    assert isinstance(hot.middleware_stack, HotSplit)
    assert not isinstance(framework.middleware_stack, HotSplit)


JSON = {"Content-Type": "application/json"}
CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("accepted", "POST", "/echo", JSON, b'{"a": 1}'),
    ("a handled problem", "POST", "/echo", JSON, b'"refuse"'),
    ("an unhandled error: 500 problem", "POST", "/echo", JSON, b'"crash"'),
    ("not JSON", "POST", "/echo", JSON, b'{"a": '),
    ("not UTF-8", "POST", "/echo", JSON, b'"\xff"'),
    ("not a JSON type: 415 before the route", "POST", "/echo", {"Content-Type": "text/plain"}, b"{}"),
    ("too large: 413 before the route", "POST", "/echo", JSON, b'"' + b"x" * 40_000 + b'"'),
    ("another method: FastAPI's 405", "GET", "/echo", {}, b""),
    ("a converted path parameter", "POST", "/things/42", JSON, b"{}"),
    ("a parameter the convertor refuses: 404", "POST", "/things/abc", JSON, b"{}"),
    ("a route not served directly", "GET", "/plain", {}, b""),
    ("no route", "POST", "/nothing", JSON, b"{}"),
]


@pytest.mark.parametrize(("what", "method", "path", "headers", "body"), CASES, ids=[c[0] for c in CASES])
async def test_each_request_is_answered_as_through_fastapis_stack(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    what: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    hot, framework = clients
    sent = {**headers, "X-Request-ID": "req-1"}
    a = await hot.request(method, path, headers=sent, content=body)
    b = await framework.request(method, path, headers=sent, content=body)
    assert (a.status_code, a.content) == (b.status_code, b.content), what
    for header in ("content-type", "x-request-id", "allow", "www-authenticate"):
        assert a.headers.get(header) == b.headers.get(header), (what, header)


async def test_the_hot_path_counts_each_request_under_its_route_template() -> None:
    app = build(hot=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        reached.clear()
        assert (await client.post("/echo", json={"a": 1})).status_code == 202
        assert (await client.post("/things/7", json={})).json() == {"ref": 7, "type": "int"}
        assert (await client.post("/echo", json="crash")).json()["code"] == "internal_error"
    assert reached == ["/echo", "/echo"]  # the route was in the scope, as the router puts it
    metrics = next(m for m in app.user_middleware if m.cls is ApiMiddleware).kwargs["metrics"]
    samples = {
        (s.labels["route"], s.labels["status"]): s.value
        for family in metrics.requests.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert samples == {("/echo", "202"): 1.0, ("/things/{ref:int}", "200"): 1.0, ("/echo", "500"): 1.0}


async def test_a_request_under_a_root_path_takes_the_apps_own_stack() -> None:
    hot_routes = build(hot=True).hot_routes
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/echo", "root_path": ""}
    assert hot_routes.match(scope) is not None
    assert hot_routes.match({**scope, "root_path": "/api"}) is None
    assert hot_routes.match({**scope, "type": "websocket"}) is None
    assert hot_routes.match({**scope, "method": "PUT"}) is None


def test_an_app_with_a_body_limit_of_its_own_keeps_its_stack() -> None:
    app = build(hot=True)
    app.max_body_size = 1024
    assert not isinstance(app.build_middleware_stack(), HotSplit)
    assert not HotRoutes([])
