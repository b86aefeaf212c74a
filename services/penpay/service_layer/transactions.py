"""Reading transactions: one by id (its owner, or an admin), and a user's own, newest first, by cursor.

A transaction that exists but belongs to someone else answers exactly like one that does not exist (404), so ids
cannot be probed for existence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from penpay_domain.errors import NotFound
from penpay_domain.ids import TransactionId, UserId
from penpay_domain.ports import UnitOfWork
from penpay_domain.transaction import Status, Transaction

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Transaction]
    next_cursor: TransactionId | None


async def get_transaction(
    uow_factory: Callable[[], UnitOfWork], txn_id: TransactionId, *, user_id: UserId, is_admin: bool
) -> Transaction:
    async with uow_factory() as uow:
        txn = await uow.transactions.get(txn_id)
    if not is_admin and txn.parties.user_id != user_id:
        raise NotFound(f"transaction {txn_id} not found")
    return txn


async def list_transactions(
    uow_factory: Callable[[], UnitOfWork], *, user_id: UserId, cursor: TransactionId | None, limit: int
) -> Page:
    limit = max(1, min(limit, MAX_PAGE))
    async with uow_factory() as uow:
        rows = await uow.transactions.list_for_user(user_id, after=cursor, limit=limit + 1)
    items = list(rows[:limit])
    return Page(items, items[-1].id if len(rows) > limit else None)


async def search_by_status(
    uow_factory: Callable[[], UnitOfWork], statuses: Sequence[Status], *, limit: int
) -> Sequence[Transaction]:
    async with uow_factory() as uow:
        return await uow.transactions.list_by_status(statuses, limit=max(1, min(limit, MAX_PAGE)))
