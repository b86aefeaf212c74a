"""RFC 9457 problem details: every rejection the API makes, and the one table mapping domain error codes to HTTP.

A problem body is ``{"type", "title", "status", "detail", "code"}`` (plus ``errors`` for validation, and a few
safe extension members such as ``remaining`` for a daily limit), served as ``application/problem+json``. ``code`` is
stable; ``type`` is ``urn:penpay:problem:<code>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from penpay.api.schemas import DOMAIN_ERROR
from penpay.logging import get_logger
from penpay_domain.errors import DomainError

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)

# Domain error code -> HTTP status. One table; an unknown code of a DomainError is a 422.
STATUS_BY_CODE: Mapping[str, int] = {
    "invalid_input": 422,
    "invalid_amount": 422,
    "amount_out_of_range": 422,
    "invalid_msisdn": 422,
    "invalid_deriv_loginid": 422,
    "currency_mismatch": 422,
    "fx_quote_expired": 422,
    "limit_exceeded": 422,
    "deriv_rejected": 422,
    "deriv_token_rejected": 422,
    "not_found": 404,
    "deriv_account_not_linked": 403,
    "illegal_transition": 409,
    "concurrency_conflict": 409,
    "pending_transfer_resolved": 409,
    "float_unavailable": 503,
    "insufficient_funds": 503,
    "deriv_unavailable": 503,
    "deriv_gateway_bad_request": 502,
    "ledger_unbalanced": 500,
}
# Extension members a client may see (numbers and short strings a rule carries); anything else stays internal.
SAFE_DETAILS = frozenset({"minimum", "maximum", "daily_limit", "remaining", "currency", "expected"})
DEFAULT_DOMAIN_STATUS = 422
OWN_MESSAGES = frozenset({"float_unavailable"})  # 5xx whose message PenPay wrote for customers (others may name hosts)


class ApiProblem(Exception):
    """A rejection decided by the HTTP layer itself (auth, idempotency, rate limits, media types)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(status: int, code: str, detail: str, extra: Mapping[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "type": f"urn:penpay:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    return Response(
        content=problem_body(status, code, detail, extra), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def status_for(exc: DomainError) -> int:
    return STATUS_BY_CODE.get(exc.code, DEFAULT_DOMAIN_STATUS)


def domain_problem(exc: DomainError) -> tuple[int, bytes]:
    """Status and body for a domain error. Server-side failures say nothing about internals."""
    status = status_for(exc)
    if status >= 500:
        detail = exc.message if exc.code in OWN_MESSAGES else "a service PenPay depends on is unavailable; try again"
        return status, problem_body(status, exc.code, detail if status == 503 else "internal error")
    extra = {k: v for k, v in exc.details.items() if k in SAFE_DETAILS and isinstance(v, int | str)}
    return status, problem_body(status, exc.code, exc.message, extra)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without ``input``/``ctx`` (they may echo a secret such as a token or a code)."""
    out = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        out.append(
            {
                "loc": loc,
                "field": ".".join(loc[1:]) or ".".join(loc),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


class BodyTooLarge(Exception):
    """Raised by the size-capping middleware's ``receive`` when a streamed body passes the cap."""


def install(app: FastAPI) -> None:
    async def on_api_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, extra=exc.extra)

    async def on_domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        status, body = domain_problem(exc)
        return Response(content=body, status_code=status, media_type=PROBLEM_JSON)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        raw = exc.errors()
        if len(raw) == 1 and isinstance(domain := raw[0].get("ctx", {}).get(DOMAIN_ERROR), DomainError):
            status, body = domain_problem(domain)  # the body's only fault: answered as the domain's own error
            return Response(content=body, status_code=status, media_type=PROBLEM_JSON)
        errors = validation_errors(raw)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(422, "invalid_json", "the body is not valid JSON", extra={"errors": errors})
        return problem_response(
            422, "validation_error", "the request does not match the schema", extra={"errors": errors}
        )

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, BodyTooLarge):
            return problem_response(413, "body_too_large", "the request body is too large")
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, code, detail, headers=exc.headers)

    app.add_exception_handler(ApiProblem, on_api_problem)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
