"""``POST /deriv/link``: link the caller's Deriv account from its API/OAuth token (validated by Deriv through the
gateway; only the gateway's ciphertext of the token is stored). Re-linking updates the stored token. No
``Idempotency-Key`` is needed: linking the same account twice leaves the same state."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from penpay.api.deps import State, User
from penpay.api.schemas import LinkedOut, LinkRequest
from penpay.service_layer import linking
from penpay_domain.ids import UserId

router = APIRouter(tags=["deriv"])


@router.post("/deriv/link", response_model=LinkedOut, summary="Link a Deriv account to the caller")
async def link(body: LinkRequest, state: State, user: User) -> JSONResponse:
    gateway = state.require_gateway()
    linked = await linking.link_account(
        state.uow_factory(f"user:{user.user_id}"),
        gateway,
        state.adapters.db.clock,
        user_id=UserId(user.user_id),
        token=body.token,
    )
    return JSONResponse({"deriv_loginid": linked.loginid, "currency": linked.currency})
