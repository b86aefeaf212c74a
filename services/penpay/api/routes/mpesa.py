"""Daraja's callbacks (ARCHITECTURE §7): STK result, B2C result, B2C queue timeout.

Served at ``/mpesa/callback``, ``/mpesa/b2c/result``, ``/mpesa/b2c/timeout`` and under
``PENPAY_CALLBACK_PUBLIC_PREFIX`` (``/hooks/stk``, ``/hooks/b2c/result``, ``/hooks/b2c/timeout``), each also with
the ``/{txn_id}/{token}`` suffix that PenPay's signed callback URLs carry (``service_layer.callbacks``).

Every callback is stored raw (with its source address and verdicts) and audited in one commit, and only then
answered with Daraja's ``{"ResultCode": 0, "ResultDesc": "Accepted"}``. The answer is the same whether the
callback was genuine, a duplicate, from a wrong address or with a forged token: a caller learns nothing. Only a
verified callback is queued for the callback worker (``{stream_prefix}:mpesa_callbacks``, field ``callback_id``).
Callers have their own rate budget per address (``PENPAY_RATE_LIMIT_CALLBACK_PER_MIN``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Request
from starlette.responses import Response

from penpay.adapters.rate_limit import Budget
from penpay.api.deps import ApiState, state_of
from penpay.api.direct_route import DirectRoute, served_directly
from penpay.api.schemas import Acknowledgement
from penpay.api.security import contains
from penpay.logging import get_logger
from penpay.service_layer.callbacks import LEGACY_PATHS
from penpay.service_layer.intake import CallbackKind, ReceivedCallback
from penpay_domain.ids import TransactionId, parse_transaction_id, parse_transaction_id_hex

log = get_logger(__name__)
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}
_ACK_BODY = json.dumps(ACK, separators=(",", ":")).encode()

Handler = Callable[..., Awaitable[Response]]


async def accept(
    state: ApiState, request: Request, kind: CallbackKind, txn_id: str | None, token: str | None
) -> Response:
    source = state.client_ip(request)
    allowed = _allowed(state, source)
    if not allowed:
        # Safaricom's own addresses are never throttled: Daraja does not resend a callback it was refused, so a 429
        # at a payday peak would lose it (the reconciler would have to ask for each one); the budget holds back
        # everyone else, whose callbacks are stored and audited but never applied
        await state.rate_limit(Budget("callback", source, state.settings.rate_limit_callback_per_min))
    raw = await request.body()
    parsed: TransactionId | None
    try:
        parsed = _url_transaction_id(txn_id) if txn_id else None
    except Exception:  # a malformed id in the URL: stored as absent, and the token cannot match
        parsed = None
    token_valid = bool(parsed and token and state.callback_urls.verify(kind, parsed, token))
    callback = ReceivedCallback(
        kind=kind,
        transaction_id=parsed,
        source_ip=source,
        source_allowed=allowed,
        token_valid=token_valid,
        body=raw.decode("utf-8", "replace"),
    )
    stored = await state.callback_intake.submit(callback)  # stored, audited and (if verified) queued, batched
    # the request's own log line (api.middleware) carries these: one line per callback
    structlog.contextvars.bind_contextvars(
        callback_id=stored.id, callback_kind=kind.value, transaction_id=parsed, verified=callback.verified
    )
    if not callback.verified:
        log.warning(
            "mpesa callback not verified",
            callback_id=stored.id,
            source_allowed=allowed,
            token_valid=token_valid,
        )
    return Response(_ACK_BODY, media_type="application/json")


def _url_transaction_id(text: str) -> TransactionId:
    """The id as callback URLs carry it: hex (``service_layer.callbacks``), or base-32 in URLs given out before."""
    return parse_transaction_id_hex(text) if len(text) == 32 else parse_transaction_id(text)


def _allowed(state: ApiState, source: str) -> bool:
    return contains(state.callback_networks, source)


async def _bare_arguments(request: Request) -> dict[str, Any]:
    return {"request": request}


async def _signed_arguments(request: Request) -> dict[str, Any]:
    params = request.path_params
    return {"request": request, "txn_id": params["txn_id"], "token": params["token"]}


def _handlers(kind: CallbackKind) -> tuple[Handler, Handler]:
    """The routes of one kind, served directly (``api.direct_route``): Safaricom's callbacks are half of the API's
    requests under load, and these need nothing of FastAPI's solver (no body model, no header, no dependency)."""

    @served_directly(_bare_arguments)
    async def bare(request: Request) -> Response:
        return await accept(state_of(request), request, kind, None, None)

    @served_directly(_signed_arguments)
    async def signed(request: Request, txn_id: str, token: str) -> Response:
        return await accept(state_of(request), request, kind, txn_id, token)

    return bare, signed


def build_router(public_prefix: str) -> APIRouter:
    router = APIRouter(tags=["mpesa callbacks"], route_class=DirectRoute)
    prefix = "/" + public_prefix.strip("/") if public_prefix.strip("/") else ""
    public = {
        CallbackKind.STK: f"{prefix}/stk",
        CallbackKind.B2C_RESULT: f"{prefix}/b2c/result",
        CallbackKind.B2C_TIMEOUT: f"{prefix}/b2c/timeout",
        CallbackKind.STATUS_RESULT: f"{prefix}/status/result",
        CallbackKind.STATUS_TIMEOUT: f"{prefix}/status/timeout",
    }
    for kind in CallbackKind:
        bare, signed = _handlers(kind)
        for base in (LEGACY_PATHS[kind], public[kind]):
            router.add_api_route(
                base, bare, methods=["POST"], response_model=Acknowledgement, name=f"{kind.value} {base}"
            )
            router.add_api_route(
                base + "/{txn_id}/{token}",
                signed,
                methods=["POST"],
                response_model=Acknowledgement,
                name=f"{kind.value} {base} signed",
            )
    return router
