"""Routes that FastAPI documents from their endpoint's signature but that are served without its dependency solver.

FastAPI's per-request machinery (dependency solving, a scratch ``Response`` per call, parsing the query string, two
``AsyncExitStack``s) was about a quarter of the API's CPU on ``POST /deposit`` (docs/performance.md, round 5). A hot
route can instead name an ``arguments`` function that builds the endpoint's keyword arguments from the request with
the same dependencies called as plain functions. FastAPI still builds the route from the endpoint's signature, so
OpenAPI (body schema, headers, response model) is unchanged; only how a request reaches the endpoint differs.

The ``arguments`` function must keep FastAPI's order of checks, which the API's answers depend on:

1. a body that is not JSON is 422 ``invalid_json`` before anything else (FastAPI reads the body first);
2. then the dependencies, in order (the caller's token and rate limits: 401/429);
3. then the body's schema (422 ``validation_error``), raised as FastAPI's ``RequestValidationError`` with FastAPI's
   ``loc`` (``["body", field]``), so the app's exception handlers render it exactly as they do for other routes.

Exceptions reach the app's exception handlers as they do from any FastAPI route. What does not apply to a direct
route: ``app.dependency_overrides`` (its dependencies are called by name; PenPay's tests use real adapters instead)
and dependencies declared on the router or the app (``tests/integration/api/test_direct_route.py`` checks against
FastAPI's own handler that the answers are the same).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

Arguments = Callable[[Request], Awaitable[dict[str, Any]]]
Endpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)
M = TypeVar("M", bound=BaseModel)
_ARGUMENTS = "__penpay_direct_arguments__"


def served_directly(arguments: Arguments) -> Callable[[E], E]:
    """Mark an endpoint to be called with ``await arguments(request)`` by a :class:`DirectRoute`."""

    def mark(endpoint: E) -> E:
        setattr(endpoint, _ARGUMENTS, arguments)
        return endpoint

    return mark


def direct_arguments(endpoint: object) -> Arguments | None:
    """The ``arguments`` function :func:`served_directly` gave ``endpoint``, if any."""
    arguments: Arguments | None = getattr(endpoint, _ARGUMENTS, None)
    return arguments


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint, if marked with :func:`served_directly`, is called with its own arguments.

    ``get_route_handler`` is FastAPI's hook for this (its "custom APIRoute class"): FastAPI wraps the handler it
    returns as it wraps its own, for every router the route is included in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        arguments = direct_arguments(self.endpoint)
        if arguments is None:
            return super().get_route_handler()
        if self.dependencies:
            raise TypeError(f"{self.path}: a directly served route cannot have route or router dependencies")
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(**await arguments(request))
            return response

        return handle


async def json_body(request: Request) -> Any:
    """The body decoded as JSON (``None`` if empty); not JSON -> FastAPI's ``json_invalid`` validation error."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from exc
    except (ValueError, RecursionError) as exc:  # not UTF-8, or nested too deep: FastAPI's answer to both
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def validate_body(model: type[M], data: Any) -> M:
    """``data`` (from :func:`json_body`) as ``model``, or FastAPI's validation error with its ``body`` locations."""
    if data is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=data) from exc
