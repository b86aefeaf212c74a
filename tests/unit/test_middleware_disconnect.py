"""A client that hangs up before its body arrives (Daraja's or the sandbox's own timeout) is not a server error:
nothing is sent back to no one, and it is counted as 499, not logged as an unhandled 500."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from penpay.api.middleware import ApiMiddleware, Metrics


async def _reads_body(scope: Any, receive: Any, send: Any) -> None:
    await Request(scope, receive).body()  # raises ClientDisconnect: the client went away
    raise AssertionError("the body cannot arrive")


async def test_a_client_gone_before_its_body_gets_no_500_and_counts_as_499() -> None:
    metrics = Metrics()
    app = ApiMiddleware(_reads_body, metrics=metrics, exempt_prefixes=("/hooks",))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/hooks/stk/x/y",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
    }
    await app(scope, receive, send)
    assert sent == []
    counted = metrics.registry.get_sample_value(
        "penpay_api_requests_total", {"method": "POST", "route": "<unmatched>", "status": "499"}
    )
    assert counted == 1
