"""The API's one ASGI middleware, outermost, so every answer passes through it:

- request id: ``X-Request-ID`` from the client (if sane) or a new one, bound to the logs and echoed back;
- body rules for writes: over ``MAX_BODY_BYTES`` -> 413 (by ``Content-Length`` up front, or while streaming);
  a non-JSON ``Content-Type`` -> 415 (callback paths excepted: Daraja's bodies are stored whatever they are);
- metrics and one access-log line per request (route template, status, duration);
- the request's arrival in the event loop's clock (:func:`received_at`), from which the deposit and withdrawal
  intakes count their deadline (``PENPAY_INTAKE_QUEUE_DEADLINE_MS``);
- anything unhandled becomes a 500 problem, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import ClientDisconnect

from penpay.api.problems import PROBLEM_JSON, BodyTooLarge, problem_body
from penpay.logging import get_logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
log = get_logger("penpay.api.access")
RECEIVED_AT = "penpay.received_at"  # the scope key of the request's arrival (the event loop's clock)


def received_at(scope: Scope) -> float | None:
    """When the request reached the API's middleware, in ``loop.time()``; None outside the middleware."""
    value = scope.get(RECEIVED_AT)
    return value if isinstance(value, float) else None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "penpay_api_requests_total",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "penpay_api_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["method", "route"],
            registry=self.registry,
        )


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, exempt_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.metrics = metrics
        self.exempt = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECEIVED_AT] = asyncio.get_running_loop().time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(process="api", request_id=request_id)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        method, path = scope["method"], scope["path"]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            rejection = self._reject(method, path, headers)
            if rejection is not None:
                await self._problem(send_wrapper, *rejection)
            else:
                await self.app(scope, _capped(receive), send_wrapper)
        except BodyTooLarge:
            if not status_holder["started"]:
                await self._problem(send_wrapper, 413, "body_too_large", "the request body is too large")
        except ClientDisconnect:
            # the client hung up before its body arrived (its own timeout): nothing was read, nothing changed, and
            # there is no one to answer; not a server error (499, as nginx logs it)
            status_holder["status"] = 499
            log.info("client_disconnected", method=method, path=path)
        except Exception:
            log.exception("unhandled error", method=method, path=path)
            if not status_holder["started"]:
                await self._problem(send_wrapper, 500, "internal_error", "internal error")
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            elapsed = time.perf_counter() - started
            status = str(status_holder["status"])
            self.metrics.requests.labels(method, template, status).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            log.info("request", method=method, route=template, status=int(status), duration_ms=round(elapsed * 1000, 2))
            structlog.contextvars.clear_contextvars()

    def _reject(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        if method not in ("POST", "PUT", "PATCH"):
            return None
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "bad_request", "Content-Length is not a number"
            if int(length) > MAX_BODY_BYTES:
                return 413, "body_too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes"
        has_body = (length is not None and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "")
        if not has_body or path.startswith(self.exempt):
            return None
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not _JSON_TYPE.match(media):
            return 415, "unsupported_media_type", "send the body as application/json"
        return None

    @staticmethod
    async def _problem(send: Send, status: int, code: str, detail: str) -> None:
        body = problem_body(status, code, detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _capped(receive: Receive) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge
        return message

    return wrapped
