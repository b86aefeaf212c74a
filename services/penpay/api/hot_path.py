"""The API's hot routes (``POST /deposit`` and Daraja's callbacks) dispatched ahead of FastAPI's middleware stack
and router.

Under load almost every request is a deposit or its STK callback, and both are served directly already
(``api.direct_route``: no dependency solver). What was left between uvicorn and those endpoints was framework:
Starlette's ``ServerErrorMiddleware``, FastAPI's telemetry and body-limit middlewares (both idle in PenPay: its
telemetry is off and it sets no ``max_body_size``), the exception middleware, FastAPI's exit-stack middleware and its
router, which walks every included router's routes for each request: ~17 % of the API's CPU in a profile of a
deposit burst (docs/performance.md, round 12).

:class:`HotSplit` sits where the app's middleware stack starts (``PenPayApi.build_middleware_stack``). A request for
a directly served route, with one of its methods, goes through the same user middleware as any request (PenPay's
``ApiMiddleware``: request id, body rules, access log, metrics), then Starlette's own ``ExceptionMiddleware`` built
from the app's exception handlers exactly as the app builds it, then the endpoint, called as
``api.direct_route`` calls it. Anything else (another path, another method, which FastAPI answers 405, a request
under a ``root_path``) takes the app's own stack, unchanged. An exception no handler takes reaches
``ApiMiddleware``, which answers 500 as it does for every route (it is inside ``ServerErrorMiddleware`` on the other
path and catches first there too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from penpay.api.direct_route import Arguments, direct_arguments


class HotRoutes:
    """The directly served routes among ``routes``, matched by method and path as Starlette's router matches them."""

    def __init__(self, routes: Iterable[object]) -> None:
        self._routes: list[tuple[APIRoute, Arguments]] = []
        for route in routes:
            if isinstance(route, APIRoute) and (arguments := direct_arguments(route.endpoint)) is not None:
                self._routes.append((route, arguments))

    def __bool__(self) -> bool:
        return bool(self._routes)

    def match(self, scope: Scope) -> tuple[APIRoute, Arguments, dict[str, Any]] | None:
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        method, path = scope["method"], scope["path"]
        for route, arguments in self._routes:
            if route.methods and method in route.methods and (found := route.path_regex.match(path)) is not None:
                convert = route.param_convertors
                params = {key: convert[key].convert(value) for key, value in found.groupdict().items()}
                return route, arguments, params
        return None


async def _dispatch(scope: Scope, receive: Receive, send: Send) -> None:
    """The matched route's endpoint (``HotSplit`` put it in the scope), called as ``api.direct_route`` calls it."""
    request = Request(scope, receive, send)
    arguments: Arguments = scope["penpay.arguments"]
    response = await scope["endpoint"](**await arguments(request))
    await response(scope, receive, send)


class HotSplit:
    """``hot`` for a request :class:`HotRoutes` matches (the scope holding the route as the router would set it),
    ``other`` (the app's own middleware stack) for the rest."""

    def __init__(self, routes: HotRoutes, *, hot: ASGIApp, other: ASGIApp) -> None:
        self.routes = routes
        self.hot = hot
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.routes.match(scope)
        if found is None:
            await self.other(scope, receive, send)
            return
        route, arguments, params = found
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        scope["penpay.arguments"] = arguments
        await self.hot(scope, receive, send)


def hot_stack(user_middleware: Sequence[Middleware], exception_handlers: dict[Any, Any], *, debug: bool) -> ASGIApp:
    """The hot routes' stack: the app's user middleware around Starlette's ``ExceptionMiddleware`` (the app's
    handlers but the 500 one, as Starlette splits them) around the endpoint."""
    handlers = {key: handler for key, handler in exception_handlers.items() if key not in (500, Exception)}
    app: ASGIApp = ExceptionMiddleware(_dispatch, handlers=handlers, debug=debug)
    for middleware in reversed(user_middleware):
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app


class PenPayApi(FastAPI):
    """FastAPI with :class:`HotSplit` in front of its middleware stack (``hot_routes``, set by ``create_app``; none:
    the app's own stack alone). An app given a ``max_body_size`` keeps its own stack, whose body limit applies."""

    hot_routes: HotRoutes = HotRoutes(())

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.hot_routes or self.max_body_size is not None:
            return stack
        hot = hot_stack(self.user_middleware, self.exception_handlers, debug=self.debug)
        return HotSplit(self.hot_routes, hot=hot, other=stack)
