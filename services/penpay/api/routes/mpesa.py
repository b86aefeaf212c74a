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

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from penpay.adapters.rate_limit import Budget
from penpay.api.deps import ApiState, state_of
from penpay.api.schemas import Acknowledgement
from penpay.api.security import contains
from penpay.logging import get_logger
from penpay.service_layer.callbacks import LEGACY_PATHS
from penpay.service_layer.intake import CallbackKind, ReceivedCallback
from penpay_domain.ids import TransactionId, parse_transaction_id, parse_transaction_id_hex

log = get_logger(__name__)
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}

Handler = Callable[..., Awaitable[JSONResponse]]


async def accept(
    state: ApiState, request: Request, kind: CallbackKind, txn_id: str | None, token: str | None
) -> JSONResponse:
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
    log.info(
        "mpesa callback stored",
        callback_id=stored.id,
        kind=kind.value,
        transaction_id=parsed,
        verified=callback.verified,
    )
    return JSONResponse(ACK)


def _url_transaction_id(text: str) -> TransactionId:
    """The id as callback URLs carry it: hex (``service_layer.callbacks``), or base-32 in URLs given out before."""
    return parse_transaction_id_hex(text) if len(text) == 32 else parse_transaction_id(text)


def _allowed(state: ApiState, source: str) -> bool:
    return contains(state.callback_networks, source)


def _handlers(kind: CallbackKind) -> tuple[Handler, Handler]:
    async def bare(request: Request) -> JSONResponse:
        return await accept(state_of(request), request, kind, None, None)

    async def signed(request: Request, txn_id: str, token: str) -> JSONResponse:
        return await accept(state_of(request), request, kind, txn_id, token)

    return bare, signed


def build_router(public_prefix: str) -> APIRouter:
    router = APIRouter(tags=["mpesa callbacks"])
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
