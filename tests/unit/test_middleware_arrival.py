"""The middleware notes when each request arrived (the event loop's clock), for the intakes' deadline
(``PENPAY_INTAKE_QUEUE_DEADLINE_MS``): what the route reads back is the moment the request entered the API."""

from __future__ import annotations

import asyncio
from typing import Any

from penpay.api.middleware import ApiMiddleware, Metrics, received_at


async def test_the_route_reads_when_its_request_arrived() -> None:
    seen: list[float | None] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05)  # the request waits somewhere before its route looks
        seen.append(received_at(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    app = ApiMiddleware(route, metrics=Metrics(), exempt_prefixes=())
    loop = asyncio.get_running_loop()
    before = loop.time()
    await app({"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send)
    arrived = seen[0]
    assert arrived is not None and before <= arrived <= before + 0.04  # when it arrived, not when the route looked
    assert received_at({"type": "http"}) is None  # a scope the middleware never saw
