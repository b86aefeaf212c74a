"""``GET /fx/quote``: the current USD/KES quote (indicative: a deposit or withdrawal locks its own quote when it is
created). With ``amount_kes`` or ``amount_usd`` it also shows what that amount would become, fee included."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse

from penpay.api.deps import ClientIp, State
from penpay.api.schemas import iso
from penpay_domain.fx import Side
from penpay_domain.money import Currency, Money

router = APIRouter(tags=["fx"])


@router.get("/fx/quote", summary="The current USD/KES quote")
async def quote(
    state: State,
    _ip: ClientIp,
    amount_kes: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
    amount_usd: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+(\.[0-9]+)?$")] = None,
) -> JSONResponse:
    now = state.adapters.db.clock.now()
    locked = await state.adapters.fx.quote(now)
    body: dict[str, Any] = {
        "quote_id": locked.quote_id,
        "pair": locked.pair,
        "mid": str(locked.mid),
        "spread_bps": locked.spread_bps,
        "deposit_rate": str(locked.applied_rate(Side.CUSTOMER_BUYS_USD)),
        "withdrawal_rate": str(locked.applied_rate(Side.CUSTOMER_SELLS_USD)),
        "issued_at": iso(locked.issued_at),
        "expires_at": iso(locked.expires_at),
    }
    if amount_kes is not None:
        kes = Money.kes(amount_kes)
        fee = state.adapters.deposit_fees.fee_for(kes)
        body["deposit"] = {
            "amount_kes": kes.minor,
            "fee": fee.minor,
            "amount_usd": locked.kes_to_usd(kes - fee).to_str() if kes > fee else "0.00",
        }
    if amount_usd is not None:
        usd = Money.parse(amount_usd, Currency.USD)
        gross = locked.usd_to_kes(usd)
        fee = state.adapters.withdrawal_fees.fee_for(gross)
        body["withdrawal"] = {"amount_usd": usd.to_str(), "fee": fee.minor, "amount_kes": (gross - fee).minor}
    return JSONResponse(body)
