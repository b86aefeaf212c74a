"""``POST /deposit``: 202 with the new transaction (idempotent; see ``api.idempotency``).

New keys go through the batched intake (``api.batch_intake``): many deposits, one database transaction. A key that
exists already is answered by the one-request path of ``api.idempotency`` (replay, 409 in flight, 422 reused, or a
stale claim taken over), exactly as before batching.

The route is the hottest in the API, so it is served by ``api.direct_route``: ``_arguments`` calls the same
dependencies FastAPI would (``State``, ``User``, the body model and the header), in FastAPI's order.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from penpay.api.deps import State, User, current_user, state_of
from penpay.api.direct_route import DirectRoute, json_body, served_directly, validate_body
from penpay.api.idempotency import HEADER, request_hash, request_path, require_key
from penpay.api.middleware import received_at
from penpay.api.problems import PROBLEM_JSON
from penpay.api.schemas import DOMAIN_ERROR, DepositRequest, TransactionOut, render_transaction
from penpay.service_layer import deposits
from penpay.service_layer.batch_initiation import Accepted, Outcome, Refused, Submission
from penpay_domain.commands import InitiateDeposit
from penpay_domain.errors import DomainError
from penpay_domain.ids import UserId
from penpay_domain.limits import LimitPolicy
from penpay_domain.money import Money

router = APIRouter(tags=["deposits"], route_class=DirectRoute)
IdempotencyHeader = Annotated[str | None, Header(alias=HEADER, description="required; Stripe semantics")]


async def _arguments(request: Request) -> dict[str, Any]:
    data = await json_body(request)
    state = state_of(request)
    user = await current_user(state, state.client_ip(request), request.headers.get("authorization"))
    try:
        body = validate_body(DepositRequest, data)
    except RequestValidationError as exc:
        raise _with_amount_range(exc, data, state.deposit_policy.limits) from exc.__cause__
    return {
        "body": body,
        "request": request,
        "state": state,
        "user": user,
        "idempotency_key": request.headers.get(HEADER),
    }


def _with_amount_range(exc: RequestValidationError, data: Any, limits: LimitPolicy) -> RequestValidationError:
    """The schema's errors, and the amount's when it is a whole number outside the deployment's range, so that one
    answer names every fault of the body. The amount alone out of range is the domain's refusal, as before (stored
    under the idempotency key and replayed: a rule's refusal, where a schema error is not kept)."""
    amount = data.get("amount_kes") if isinstance(data, dict) else None
    if type(amount) is not int or any(err.get("loc") == ("body", "amount_kes") for err in exc.errors()):
        return exc
    try:
        limits.check_amount(Money.kes(amount))
    except DomainError as refused:
        error = {
            "type": refused.code,
            "loc": ("body", "amount_kes"),
            "msg": refused.message,
            "input": amount,
            "ctx": {"reason": refused.message, DOMAIN_ERROR: refused},
        }
        return RequestValidationError([error, *exc.errors()], body=exc.body)  # amount_kes: the first field
    return exc


def answered(outcome: Outcome) -> Response | None:
    """The response to a request its batch created or refused; None if its key was taken (the one-request path's)."""
    if isinstance(outcome, Accepted):
        structlog.contextvars.bind_contextvars(transaction_id=outcome.txn.id)
        return Response(content=outcome.body, status_code=202, media_type="application/json")
    if isinstance(outcome, Refused):
        return Response(content=outcome.body, status_code=outcome.status, media_type=PROBLEM_JSON)
    return None


@router.post(
    "/deposit",
    status_code=202,
    response_model=TransactionOut,
    summary="Pay KES by M-Pesa (STK push) and receive USD on a Deriv account",
)
@served_directly(_arguments)
async def create_deposit(
    body: DepositRequest, request: Request, state: State, user: User, idempotency_key: IdempotencyHeader = None
) -> Response:
    key = require_key(user.user_id, idempotency_key)
    cmd = InitiateDeposit(
        user_id=UserId(user.user_id),
        amount=Money.kes(body.amount_kes),
        msisdn=body.msisdn,
        deriv_loginid=body.deriv_loginid,
        idempotency_key=key,
    )
    digest = request_hash(request.method, request_path(request), await request.body())
    answer = answered(await state.deposit_intake.submit(Submission(cmd, digest), since=received_at(request.scope)))
    if answer is not None:
        return answer
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
