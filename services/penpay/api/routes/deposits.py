"""``POST /deposit``: 202 with the new transaction (idempotent; see ``api.idempotency``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from penpay.api.deps import State, User
from penpay.api.idempotency import HEADER, require_key
from penpay.api.schemas import DepositRequest, TransactionOut, render_transaction
from penpay.service_layer import deposits
from penpay_domain.commands import InitiateDeposit
from penpay_domain.ids import UserId, parse_deriv_loginid
from penpay_domain.money import Money
from penpay_domain.msisdn import parse_msisdn

router = APIRouter(tags=["deposits"])
IdempotencyHeader = Annotated[str | None, Header(alias=HEADER, description="required; Stripe semantics")]


@router.post(
    "/deposit",
    status_code=202,
    response_model=TransactionOut,
    summary="Pay KES by M-Pesa (STK push) and receive USD on a Deriv account",
)
async def create_deposit(
    body: DepositRequest, request: Request, state: State, user: User, idempotency_key: IdempotencyHeader = None
) -> Response:
    key = require_key(user.user_id, idempotency_key)
    cmd = InitiateDeposit(
        user_id=UserId(user.user_id),
        amount=Money.kes(body.amount_kes),
        msisdn=parse_msisdn(body.msisdn),
        deriv_loginid=parse_deriv_loginid(body.deriv_loginid),
        idempotency_key=key,
    )
    return await state.idempotency.run(
        key,
        request,
        lambda: deposits.initiate_deposit(
            cmd,
            uow=state.uow(f"user:{user.user_id}"),
            fx=state.adapters.fx,
            policy=state.deposit_policy,
            publisher=state.publisher,
            render=render_transaction,
        ),
    )
