"""``GET /transactions/{id}`` (owner, or an admin from an allowed address; anyone else gets 404, exactly as for an
id that does not exist, so ids cannot be probed) and ``GET /transactions`` (the caller's own, newest first;
``cursor`` is the ``next_cursor`` of the previous page, i.e. the last id seen)."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from starlette.responses import Response

from penpay.api.deps import Address, State, User, sees_everything
from penpay.api.schemas import TransactionOut, TransactionPage, render_page, render_transaction
from penpay.service_layer import transactions
from penpay_domain.errors import NotFound
from penpay_domain.ids import UserId, parse_transaction_id

router = APIRouter(tags=["transactions"])


@router.get("/transactions/{txn_id}", response_model=TransactionOut, summary="One transaction")
async def get_transaction(txn_id: str, state: State, user: User, ip: Address) -> Response:
    try:
        parsed = parse_transaction_id(txn_id)
    except Exception as exc:
        raise NotFound(f"transaction {txn_id[:40]} not found") from exc
    structlog.contextvars.bind_contextvars(transaction_id=parsed)
    txn = await transactions.get_transaction(
        state.uow_factory(f"user:{user.user_id}"),
        parsed,
        user_id=UserId(user.user_id),
        is_admin=sees_everything(state, user, ip),
    )
    return Response(content=render_transaction(txn), media_type="application/json")


@router.get("/transactions", response_model=TransactionPage, summary="The caller's transactions, newest first")
async def list_transactions(
    state: State,
    user: User,
    cursor: Annotated[str | None, Query(max_length=26)] = None,
    limit: Annotated[int, Query(ge=1, le=transactions.MAX_PAGE)] = 20,
) -> Response:
    after = parse_transaction_id(cursor) if cursor else None
    page = await transactions.list_transactions(
        state.uow_factory(f"user:{user.user_id}"), user_id=UserId(user.user_id), cursor=after, limit=limit
    )
    return Response(content=render_page(page.items, page.next_cursor), media_type="application/json")
