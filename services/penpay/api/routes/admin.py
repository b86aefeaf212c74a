"""Admin routes: ``role=admin`` AND a client address in ``PENPAY_ADMIN_ALLOWED_CIDRS`` (see ``deps.current_admin``).

Resolve/retry need no ``Idempotency-Key``: the state machine only lets a NEEDS_REVIEW transaction be settled once
(a repeat is 409 ``illegal_transition``). Every admin action is audited with the admin's user id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse, Response

from penpay.api.deps import Admin, State
from penpay.api.problems import ApiProblem
from penpay.api.schemas import (
    ResolveRequest,
    RetryRequest,
    TransactionList,
    TransactionOut,
    dumps,
    render_transaction,
    transaction_dict,
)
from penpay.service_layer import admin, reviews, transactions
from penpay_domain.commands import ResolveReview, RetryReview
from penpay_domain.errors import CurrencyMismatch, InvalidInput
from penpay_domain.ids import parse_transaction_id
from penpay_domain.transaction import Status

router = APIRouter(prefix="/admin", tags=["admin"])


def _status(text: str) -> Status:
    try:
        return Status(text.strip().upper())
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is not a transaction status ({', '.join(s.value for s in Status)})") from exc


@router.get("/ledger/balances", summary="Every ledger account with its balances")
async def balances(state: State, who: Admin) -> JSONResponse:
    async with state.uow(f"admin:{who.user_id}") as uow:
        accounts = await uow.ledger.accounts()
    return JSONResponse(
        {
            "accounts": [
                {
                    "account": a.code,
                    "currency": a.currency.value,
                    "rule": a.rule.value,
                    "balance": a.balance.to_str(),
                    "available": a.available.to_str(),
                    "debits_pending": a.debits_pending,
                    "debits_posted": a.debits_posted,
                    "credits_pending": a.credits_pending,
                    "credits_posted": a.credits_posted,
                }
                for a in accounts
            ]
        }
    )


@router.get("/ledger/check", summary="Every ledger invariant: {ok, currencies, problems}")
async def ledger_check(state: State, who: Admin) -> JSONResponse:
    result = await admin.check_ledger(state.uow_factory(f"admin:{who.user_id}", snapshot=True))
    return JSONResponse({"ok": result.ok, "currencies": result.currencies, "problems": result.problems})


@router.get(
    "/ledger/deriv-agent",
    summary="deriv:agent against Deriv's payment-agent balance: {ok, drift_cents, deriv_cents, lowest_cents, ...}",
)
async def deriv_agent_balance(state: State, who: Admin) -> JSONResponse:
    """Whether the ledger explains the payment-agent balance Deriv reports: ``ok`` when it lies between the posted
    balance less the pending payouts and the posted balance plus the pending pay-ins; ``drift_cents`` how far
    outside (negative: Deriv holds less). ``exact`` says nothing was pending, so the two had to be equal."""
    try:
        r = await admin.reconcile_deriv_agent(state.uow_factory(f"admin:{who.user_id}"), state.require_gateway())
    except CurrencyMismatch as exc:  # Deriv's answer, not the caller's request, is wrong
        raise ApiProblem(502, "deriv_unexpected_answer", str(exc)) from exc
    return JSONResponse(
        {
            "ok": r.ok,
            "account": r.account,
            "currency": r.currency.value,
            "deriv_cents": r.provider,
            "posted_cents": r.posted,
            "credits_pending_cents": r.credits_pending,
            "debits_pending_cents": r.debits_pending,
            "lowest_cents": r.lowest,
            "highest_cents": r.highest,
            "drift_cents": r.drift,
            "exact": r.exact,
        }
    )


@router.get("/audit/verify", summary="Re-walk the audit hash chain: {ok, rows, first_bad_row, reason}")
async def audit_verify(state: State, who: Admin) -> JSONResponse:
    report = await admin.verify_audit(state.uow_factory(f"admin:{who.user_id}"))
    return JSONResponse(
        {"ok": report.ok, "rows": report.rows, "first_bad_row": report.first_bad_row, "reason": report.reason}
    )


@router.get("/transactions", response_model=TransactionList, summary="Transactions by status (comma-separated)")
async def search(
    state: State,
    who: Admin,
    status: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=transactions.MAX_PAGE)] = 50,
) -> Response:
    wanted = [_status(s) for s in status.split(",") if s.strip()] if status else list(Status)
    items = await transactions.search_by_status(state.uow_factory(f"admin:{who.user_id}"), wanted, limit=limit)
    body: dict[str, Any] = {"items": [transaction_dict(t) for t in items]}
    return Response(content=dumps(body), media_type="application/json")


@router.post("/transactions/{txn_id}/resolve", response_model=TransactionOut, summary="Settle a NEEDS_REVIEW")
async def resolve(txn_id: str, body: ResolveRequest, state: State, who: Admin) -> Response:
    txn = await reviews.resolve_review(
        ResolveReview(
            transaction_id=parse_transaction_id(txn_id), status=_status(body.status), admin=who.user_id, note=body.note
        ),
        uow_factory=state.uow_factory(f"admin:{who.user_id}"),
        publisher=state.publisher,
    )
    return Response(content=render_transaction(txn), media_type="application/json")


@router.post("/transactions/{txn_id}/retry", response_model=TransactionOut, summary="Resume a NEEDS_REVIEW")
async def retry(txn_id: str, body: RetryRequest, state: State, who: Admin) -> Response:
    txn = await reviews.retry_review(
        RetryReview(transaction_id=parse_transaction_id(txn_id), status=_status(body.status), admin=who.user_id),
        uow_factory=state.uow_factory(f"admin:{who.user_id}"),
        publisher=state.publisher,
    )
    return Response(content=render_transaction(txn), media_type="application/json")
