"""``POST /deposit`` is served by ``api.direct_route``, not by FastAPI's dependency solver, and reached through
``api.hot_path``, not FastAPI's middleware stack and router. These tests send the same requests to the real app and
to a twin app in which the same endpoint is an ordinary ``APIRoute`` behind FastAPI's own stack, and require the
same status, problem code and errors from both, so the two stay interchangeable (FastAPI's order of checks included).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import fastapi.routing
import httpx
import pytest
from fastapi.routing import APIRoute

from penpay.api.app import create_app
from penpay.api.deps import ApiState
from penpay.api.direct_route import DirectRoute, served_directly
from tests.integration.api.conftest import CLIENT_IP, Api, new_key, new_user

pytestmark = pytest.mark.integration

GOOD = {"amount_kes": 1000, "msisdn": "254712345678", "deriv_loginid": "CR1234567"}


@pytest.fixture
async def twin(api: Api, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The same app, but with ``/deposit`` served by FastAPI's own handler (the dependency solver) through FastAPI's
    own stack (no ``api.hot_path``): what the API answered before either shortcut."""
    state: ApiState = api.client._transport.app.state.penpay  # type: ignore[attr-defined]
    app = create_app(api.settings, state.adapters, hot_path=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(CLIENT_IP, 51000)), base_url="http://testserver"
    ) as client:
        with monkeypatch.context() as patched:
            # FastAPI builds an included route's handler at the app's first request
            patched.setattr(DirectRoute, "get_route_handler", APIRoute.get_route_handler)
            assert (await client.get("/deposit")).status_code == 405
        yield client


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests FastAPI's dependency solver handles from now on."""
    paths: list[str] = []
    solve = vars(fastapi.routing)["solve_dependencies"]

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


async def test_the_deposit_route_skips_the_dependency_solver(
    api: Api, twin: httpx.AsyncClient, solved: list[str]
) -> None:
    headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
    assert (await api.client.post("/deposit", json=GOOD, headers=headers)).status_code == 202
    assert solved == []
    assert (await twin.post("/deposit", json=GOOD, headers=headers)).status_code == 202
    assert solved == ["/deposit"]


async def test_the_callback_routes_skip_the_dependency_solver_and_answer_alike(
    api: Api, twin: httpx.AsyncClient, solved: list[str]
) -> None:
    body = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_direct", "ResultCode": 1032}}}
    for path in ("/mpesa/callback", f"/mpesa/callback/{'0' * 32}/not-a-token", "/mpesa/b2c/result"):
        direct = await api.client.post(path, json=body)
        served = await twin.post(path, json=body)
        assert direct.status_code == served.status_code == 200, path
        assert direct.json() == served.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}, path
        assert direct.headers["content-type"] == served.headers["content-type"], path
    assert solved == ["/mpesa/callback", f"/mpesa/callback/{'0' * 32}/not-a-token", "/mpesa/b2c/result"]


def _cases(api: Api) -> list[tuple[str, dict[str, str], bytes]]:
    user = new_user()
    json_type = {"Content-Type": "application/json"}
    auth = api.auth(user, **json_type)
    return [
        ("malformed JSON, no token", json_type, b'{"amount_kes": '),
        ("malformed JSON", auth, b'{"amount_kes": '),
        ("not UTF-8", auth, b'{"msisdn": "\xff"}'),
        ("nested too deep", auth, b"[" * 30_000),
        ("empty body", auth, b""),
        ("empty body, no token", json_type, b""),
        ("a list", auth, b"[1, 2]"),
        ("a missing field, no token", json_type, json.dumps({"amount_kes": 1000}).encode()),
        ("a missing field", auth, json.dumps({"amount_kes": 1000}).encode()),  # in range: an amount out of
        # range is named beside the schema's errors, which FastAPI's own route does not do (test_deposits)
        ("a float amount", auth, json.dumps({**GOOD, "amount_kes": 5.5}).encode()),
        ("a string amount", auth, json.dumps({**GOOD, "amount_kes": "5"}).encode()),
        ("an unknown field", auth, json.dumps({**GOOD, "extra": 1}).encode()),
        ("a bad msisdn", auth, json.dumps({**GOOD, "msisdn": "12"}).encode()),
        ("a bad login id", auth, json.dumps({**GOOD, "deriv_loginid": "nope"}).encode()),
        ("no idempotency key", auth, json.dumps(GOOD).encode()),
        ("a garbage token", {"Authorization": "Bearer x.y.z", **json_type}, json.dumps(GOOD).encode()),
        ("a wrong scheme", {"Authorization": "Basic abc", **json_type}, json.dumps(GOOD).encode()),
    ]


def _answer(response: httpx.Response) -> tuple[int, str, Any]:
    body = response.json()
    return response.status_code, body.get("code"), body.get("errors")


async def test_bad_requests_get_the_answers_fastapi_gives(api: Api, twin: httpx.AsyncClient) -> None:
    for what, headers, body in _cases(api):
        direct = await api.client.post("/deposit", content=body, headers=headers)
        served = await twin.post("/deposit", content=body, headers=headers)
        assert direct.status_code >= 400, what
        assert _answer(direct) == _answer(served), what
        assert direct.headers.get("content-type") == served.headers.get("content-type"), what
        assert direct.headers.get("www-authenticate") == served.headers.get("www-authenticate"), what


async def test_a_deposit_and_its_replay_are_answered_alike(api: Api, twin: httpx.AsyncClient) -> None:
    """The direct route and FastAPI's hash the request the same way: a replay through either is the same answer,
    and the same key with another body is refused by either."""
    user = new_user()
    headers = api.auth(user, **{"Idempotency-Key": new_key()})
    first = await api.client.post("/deposit", json=GOOD, headers=headers)
    assert first.status_code == 202
    again = await twin.post("/deposit", json=GOOD, headers=headers)
    assert again.status_code == 202
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    other = await twin.post("/deposit", json={**GOOD, "amount_kes": 2000}, headers=headers)
    assert _answer(other) == _answer(
        await api.client.post("/deposit", json={**GOOD, "amount_kes": 2000}, headers=headers)
    )
    assert other.status_code == 422


def test_a_direct_route_refuses_dependencies_it_would_not_run() -> None:
    async def arguments(request: Any) -> dict[str, Any]:
        return {}

    @served_directly(arguments)
    async def endpoint() -> Any:
        raise AssertionError("never called")

    async def gate() -> None:
        return None

    router = fastapi.APIRouter(route_class=DirectRoute, dependencies=[fastapi.Depends(gate)])
    with pytest.raises(TypeError, match="cannot have route or router dependencies"):
        router.add_api_route("/x", endpoint, methods=["POST"])
