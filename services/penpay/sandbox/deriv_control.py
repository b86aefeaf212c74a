"""The Deriv simulator's control HTTP: inspection and fault injection (the sandbox mounts it at ``/deriv``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from penpay.sandbox.deriv_accounts import cents_to_wire, statement_row

if TYPE_CHECKING:
    from penpay.sandbox.deriv import DerivSimulator

Json = dict[str, Any]


class FaultsIn(BaseModel):
    rate_limit: int = Field(default=0, ge=0, description="the next n calls get RateLimit")
    drop: bool = Field(default=False, description="abort every open socket now")
    drop_on_next: list[str] = Field(default_factory=list, description="calls whose next request drops the socket")
    clear: bool = False


class FundIn(BaseModel):
    amount_cents: int = Field(gt=0)


def create_deriv_control_router(sim: DerivSimulator) -> APIRouter:
    """Inspection and fault injection for tests and demos (the sandbox mounts it at ``/deriv``)."""
    router = APIRouter(tags=["deriv"])

    def account_view(loginid: str) -> Json:
        try:
            account = sim.books.account(loginid)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"unknown login id {loginid}") from None
        return {
            "loginid": account.loginid,
            "currency": account.currency,
            "balance": str(cents_to_wire(account.balance_cents)),
            "balance_cents": account.balance_cents,
            "email": account.email,
            "fullname": account.fullname,
            "statement": [
                {**statement_row(e, with_description=True), "amount_cents": e.amount_cents}
                | {
                    "amount": str(cents_to_wire(e.amount_cents)),
                    "balance_after": str(cents_to_wire(e.balance_after_cents)),
                }
                for e in reversed(account.statement)
            ],
        }

    @router.get("/accounts/{loginid}")
    async def get_account(loginid: str) -> Json:
        return account_view(loginid)

    @router.post("/accounts/{loginid}/fund")
    async def fund_account(loginid: str, body: FundIn) -> Json:
        try:
            sim.fund(loginid, body.amount_cents)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"unknown login id {loginid}") from None
        return account_view(loginid)

    @router.get("/verification-codes/{loginid}")
    async def get_verification_code(loginid: str) -> Json:
        code = sim.verification_code(loginid)
        if code is None:
            raise HTTPException(status_code=404, detail=f"no verification code sent to {loginid}")
        return {"loginid": loginid, "code": code}

    @router.post("/faults")
    async def set_faults(body: FaultsIn) -> Json:
        if body.clear:
            sim.clear_faults()
        if body.rate_limit:
            sim.inject_rate_limit(body.rate_limit)
        for call in body.drop_on_next:
            sim.drop_on_next(call)
        if body.drop:
            await sim.drop_connections()
        return {"ok": True, "connections": sim.connection_count}

    return router
