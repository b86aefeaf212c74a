"""``POST /withdraw`` (202, idempotent) and ``POST /withdraw/code`` (ask Deriv to e-mail the verification code).

New keys go through the batched intake (``api.batch_intake``), as deposits do; a key that exists already is answered
by the one-request path of ``api.idempotency`` (replay, 409 in flight, 422 reused, a stale claim taken over).

``/withdraw/code`` moves no money and needs no ``Idempotency-Key``: repeating it sends another e-mail, which is what
a user pressing "resend" wants. The verification code is a secret: it is never logged and is stored encrypted.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from penpay.api.deps import State, User
from penpay.api.idempotency import request_hash, request_path, require_key
from penpay.api.middleware import received_at
from penpay.api.routes.deposits import IdempotencyHeader, answered
from penpay.api.schemas import (
    CodeRequestedOut,
    TransactionOut,
    WithdrawalCodeRequest,
    WithdrawRequest,
    render_transaction,
)
from penpay.service_layer import linking, withdrawals
from penpay.service_layer.batch_initiation import Submission
from penpay_domain.commands import InitiateWithdrawal
from penpay_domain.ids import UserId
from penpay_domain.money import Currency, Money

router = APIRouter(tags=["withdrawals"])


@router.post(
    "/withdraw",
    status_code=202,
    response_model=TransactionOut,
    summary="Debit USD from a linked Deriv account and receive KES by M-Pesa (B2C)",
)
async def create_withdrawal(
    body: WithdrawRequest, request: Request, state: State, user: User, idempotency_key: IdempotencyHeader = None
) -> Response:
    key = require_key(user.user_id, idempotency_key)
    cmd = InitiateWithdrawal(
        user_id=UserId(user.user_id),
        amount=Money.parse(body.amount_usd, Currency.USD),
        msisdn=body.msisdn,
        deriv_loginid=body.deriv_loginid,
        verification_code=body.verification_code,
        idempotency_key=key,
    )
    digest = request_hash(request.method, request_path(request), await request.body())
    answer = answered(await state.withdrawal_intake.submit(Submission(cmd, digest), since=received_at(request.scope)))
    if answer is not None:
        return answer
    return await state.idempotency.run(
        key,
        request,
        lambda: withdrawals.initiate_withdrawal(
            cmd,
            uow=state.uow(f"user:{user.user_id}"),
            fx=state.adapters.fx,
            policy=state.withdrawal_policy,
            publisher=state.publisher,
            render=render_transaction,
        ),
    )


@router.post(
    "/withdraw/code",
    status_code=202,
    response_model=CodeRequestedOut,
    summary="Ask Deriv to e-mail the withdrawal verification code to the owner of a linked account",
)
async def request_code(body: WithdrawalCodeRequest, state: State, user: User) -> JSONResponse:
    loginid = body.deriv_loginid
    gateway = state.require_gateway()
    await linking.request_withdrawal_code(
        state.uow_factory(f"user:{user.user_id}"), gateway, user_id=UserId(user.user_id), loginid=loginid
    )
    return JSONResponse({"status": "sent", "deriv_loginid": loginid}, status_code=202)
