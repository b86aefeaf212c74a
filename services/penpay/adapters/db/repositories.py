"""SQL repositories for the transaction aggregate and users' linked Deriv accounts.

Explicit row <-> domain mapping on the money path. ``save`` is an optimistic compare-and-set on ``version``; callers
that change a transaction load it ``for_update`` first, so the check only fires on a genuine bug or a lost lock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import from_db, to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.script import run_script
from penpay.adapters.db.tables import deriv_accounts, transactions
from penpay_domain.errors import ConcurrencyConflict, NotFound
from penpay_domain.fx import LockedRate
from penpay_domain.ids import DerivLoginId, PayoutId, QuoteId, TransactionId, UserId
from penpay_domain.money import Currency, Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.ports import LinkedAccount
from penpay_domain.transaction import Kind, LegState, Parties, Status, Transaction

FAILED_STATUSES = (Status.PAYMENT_FAILED, Status.FAILED)


def transaction_row(txn: Transaction) -> dict[str, Any]:
    """The ``transactions`` row of an aggregate (column -> value)."""
    return {
        "id": txn.id,
        "kind": txn.kind.value,
        "status": txn.status.value,
        "user_id": txn.parties.user_id,
        "msisdn": txn.parties.msisdn,
        "deriv_loginid": txn.parties.deriv_loginid,
        "amount_kes": txn.amount_kes.minor,
        "amount_usd": txn.amount_usd.minor,
        "fee_kes": txn.fee.minor,
        "quote_id": txn.quote.quote_id,
        "fx_mid": txn.quote.mid,
        "fx_spread_bps": txn.quote.spread_bps,
        "fx_rate": txn.fx_rate,
        "quote_issued_at": to_db(txn.quote.issued_at),
        "quote_expires_at": to_db(txn.quote.expires_at),
        "mpesa_checkout_request_id": txn.mpesa_checkout_request_id,
        "mpesa_receipt": txn.mpesa_receipt,
        "payout_id": txn.payout_id,
        "refund_payout_id": txn.refund_payout_id,
        "b2c_conversation_id": txn.b2c_conversation_id,
        "b2c_receipt": txn.b2c_receipt,
        "deriv_transaction_id": txn.deriv_transaction_id,
        "reversal_deriv_transaction_id": txn.reversal_deriv_transaction_id,
        "failure_code": txn.failure_code,
        "failure_reason": (txn.failure_reason or "")[:255] or None,
        "review_reason": (txn.review_reason or "")[:255] or None,
        "stk_requested_at": to_db(txn.stk_requested_at) if txn.stk_requested_at else None,
        "legs": json.dumps({k: v.value for k, v in sorted(txn.legs.items())}, separators=(",", ":")),
        "version": txn.version,
        "created_at": to_db(txn.created_at),
        "updated_at": to_db(txn.updated_at),
    }


# The statements every step runs, built once: a statement built per call costs SQLAlchemy a cache-key walk over all
# its values (about 30 columns here) before it can reuse the compiled SQL; these bind their values instead.
_COLUMNS = [c.name for c in transactions.columns]
_INSERT = transactions.insert().values({c: sa.bindparam(c) for c in _COLUMNS})
_SAVE = (
    transactions.update()
    .where(transactions.c.id == sa.bindparam("b_id"), transactions.c.version == sa.bindparam("b_version"))
    .values({c: sa.bindparam(f"v_{c}") for c in _COLUMNS if c != "id"})
)
_SET_COLUMNS = [c for c in _COLUMNS if c != "id"]


def _changed(row: Mapping[str, Any], stored: Mapping[str, Any] | None) -> list[str]:
    """The columns of ``row`` whose value differs from the stored row (all of them when it is not known)."""
    if stored is None:
        return _SET_COLUMNS
    return [column for column in _SET_COLUMNS if row[column] != stored[column]]


def _save_changed(
    txns: Sequence[Transaction], rows: Sequence[dict[str, Any]], columns: Sequence[str]
) -> tuple[str, tuple[Any, ...]]:
    """One ``UPDATE`` for one or several rows (distinct ids) that sets only ``columns`` (those that changed in any of
    them: every value is escaped into the statement's text, and most of a row does not change in a step). Each row
    is matched on its id and the version it was read at, and its ``version`` (``rows`` hold the read version + 1,
    as :meth:`SqlTransactionRepository.save_many` builds them) is set to ``version + 1``. MySQL counts the rows
    matched (the driver's FOUND_ROWS), so a count short of the batch means one row moved on, and the caller rolls
    back. ``executemany`` would be one round trip per row. The primary key is forced: the id list must never become
    a scan that locks other transactions' rows.

    Several rows: a column that has one value in every row (a step's status and time, nearly always) is set to it;
    only one whose values differ (a checkout id) is set by a ``CASE id``, which the server evaluates for each row by
    comparing its id with each ``WHEN`` in turn, n²/2 comparisons a column (at 64 rows, ~40 % of the server's CPU
    for such an ``UPDATE``; docs/performance.md, round 15). The rows' versions match as ``version = v`` when they
    are all at one version, else as ``(id, version) IN (...)``, which the server looks up in a sorted list."""
    if len(txns) == 1:
        [txn], [row] = txns, rows
        assignments = ", ".join(f"`{column}` = %s" for column in columns)
        sql = f"UPDATE transactions SET {assignments} WHERE id = %s AND version = %s"  # noqa: S608
        return sql, (*(row[column] for column in columns), txn.id, txn.version)
    n = len(txns)
    case = "CASE id " + " ".join(["WHEN %s THEN %s"] * n) + " END"
    parts: list[str] = []
    values: list[Any] = []
    for column in columns:
        if column == "version":
            parts.append("`version` = `version` + 1")
            continue
        first = rows[0][column]
        if all(type(row[column]) is type(first) and row[column] == first for row in rows):
            parts.append(f"`{column}` = %s")
            values.append(first)
        else:
            parts.append(f"`{column}` = {case}")
            for txn, row in zip(txns, rows, strict=True):
                values += [txn.id, row[column]]
    values += [t.id for t in txns]
    versions = {t.version for t in txns}
    if len(versions) == 1:
        cas = "version = %s"
        values += versions
    else:
        cas = f"(id, version) IN ({', '.join(['(%s, %s)'] * n)})"
        for txn in txns:
            values += [txn.id, txn.version]
    sql = (
        f"UPDATE transactions FORCE INDEX (PRIMARY) SET {', '.join(parts)} "  # noqa: S608 - column names from the table
        f"WHERE id IN ({', '.join(['%s'] * n)}) AND {cas}"
    )
    return sql, tuple(values)


_GET = sa.select(transactions).where(transactions.c.id == sa.bindparam("b_id"))
_GET_FOR_UPDATE = _GET.with_for_update()
# a batch of steps loads its transactions in one statement, locking them in id order (as every batch does, so two
# batches over the same rows wait for each other instead of deadlocking)
_GET_MANY = sa.select(transactions).where(transactions.c.id.in_(sa.bindparam("b_ids", expanding=True)))
_GET_MANY_FOR_UPDATE = _GET_MANY.order_by(transactions.c.id).with_for_update()


# by the unique index: the hint keeps MariaDB from scanning (and locking its way through) a small table
def _locking_by(column: sa.Column[Any], index: str) -> sa.Select[Any]:
    """Every transaction whose ``column`` is in ``:b_keys``, locked in id order (through its unique index)."""
    return (
        sa.select(transactions)
        .with_hint(transactions, f"FORCE INDEX ({index})")
        .where(column.in_(sa.bindparam("b_keys", expanding=True)))
        .order_by(transactions.c.id)
        .with_for_update()
    )


_BY_CHECKOUTS_FOR_UPDATE = _locking_by(
    transactions.c.mpesa_checkout_request_id, "uq_transactions_mpesa_checkout_request_id"
)
_BY_CONVERSATIONS_FOR_UPDATE = _locking_by(transactions.c.b2c_conversation_id, "uq_transactions_b2c_conversation_id")


def _transaction(row: Sequence[Any]) -> Transaction:
    """The aggregate of a full ``transactions`` row (``select(transactions)``: its columns in the table's order),
    unpacked by position: every step loads its transactions, and a lookup by column name per value cost more than
    the rest of the mapping. ``tests/unit/test_transaction_row.py`` pins the order to the table's."""
    (
        id_, kind, status, user_id, msisdn, deriv_loginid, amount_kes, amount_usd, fee_kes, quote_id, fx_mid,
        fx_spread_bps, fx_rate, quote_issued_at, quote_expires_at, checkout_request_id, mpesa_receipt, payout_id,
        refund_payout_id, b2c_conversation_id, b2c_receipt, deriv_transaction_id, reversal_deriv_transaction_id,
        failure_code, failure_reason, review_reason, stk_requested_at, legs, version, created_at, updated_at,
    ) = row  # fmt: skip
    return Transaction(
        id=TransactionId(id_),
        kind=Kind(kind),
        status=Status(status),
        parties=Parties(user_id=UserId(user_id), msisdn=Msisdn(msisdn), deriv_loginid=DerivLoginId(deriv_loginid)),
        amount_kes=Money(int(amount_kes), Currency.KES),
        amount_usd=Money(int(amount_usd), Currency.USD),
        fee=Money(int(fee_kes), Currency.KES),
        quote=LockedRate(
            quote_id=QuoteId(quote_id),
            mid=Decimal(fx_mid),
            spread_bps=int(fx_spread_bps),
            issued_at=from_db(quote_issued_at),
            expires_at=from_db(quote_expires_at),
        ),
        fx_rate=Decimal(fx_rate),
        created_at=from_db(created_at),
        updated_at=from_db(updated_at),
        version=int(version),
        mpesa_checkout_request_id=checkout_request_id,
        mpesa_receipt=mpesa_receipt,
        payout_id=PayoutId(payout_id) if payout_id else None,
        refund_payout_id=PayoutId(refund_payout_id) if refund_payout_id else None,
        b2c_conversation_id=b2c_conversation_id,
        b2c_receipt=b2c_receipt,
        deriv_transaction_id=deriv_transaction_id,
        reversal_deriv_transaction_id=reversal_deriv_transaction_id,
        failure_code=failure_code,
        failure_reason=failure_reason,
        review_reason=review_reason,
        stk_requested_at=from_db(stk_requested_at) if stk_requested_at else None,
        legs=dict(_legs(legs)),
    )


@functools.lru_cache(maxsize=256)
def _legs(text: str) -> tuple[tuple[str, LegState], ...]:
    """A ``legs`` column's states (a handful of distinct values in all: parsed once each)."""
    return tuple((k, LegState(v)) for k, v in json.loads(text).items())


class SqlTransactionRepository:
    """Tracks every aggregate it hands out or receives, so the unit of work can flush their events and postings."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.seen: list[Transaction] = []
        self._written: dict[int, tuple[int, int]] = {}  # id(txn) -> (events, transfers) when last written
        # id(txn) -> its row as the database holds it (read, inserted or last saved here), so a save sets only the
        # columns that differ; the version compare-and-set guarantees the row has not moved on since
        self._stored: dict[int, Mapping[str, Any]] = {}
        # found and locked by find_many_by_checkout_request_ids / find_many_by_conversation_ids
        self._locked_by_checkout: dict[str, Transaction] = {}
        self._locked_by_conversation: dict[str, Transaction] = {}

    def _track(self, txn: Transaction, stored: Mapping[str, Any] | None = None) -> Transaction:
        if id(txn) not in self._written:  # tracked once, whatever the batch's size (every aggregate it tracks has one)
            self.seen.append(txn)
            self._written[id(txn)] = (len(txn.events), len(txn.ledger_transfers))
            if stored is not None:
                self._stored[id(txn)] = stored
        return txn

    def _loaded(self, row: sa.Row[tuple[object, ...]]) -> Transaction:
        return self._track(_transaction(row), cast("Mapping[str, Any]", row._mapping))  # keyed by column name

    def needs_save(self, txn: Transaction) -> bool:
        """True if the aggregate recorded something since it was loaded, added or saved."""
        return self._written.get(id(txn)) != (len(txn.events), len(txn.ledger_transfers))

    async def add(self, txn: Transaction) -> None:
        row = transaction_row(txn)
        await self._conn.execute(_INSERT, row)
        self._track(txn)
        self._written[id(txn)] = (len(txn.events), len(txn.ledger_transfers))
        self._stored[id(txn)] = row

    async def get(self, txn_id: TransactionId, *, for_update: bool = False) -> Transaction:
        row = (await self._conn.execute(_GET_FOR_UPDATE if for_update else _GET, {"b_id": txn_id})).first()
        if row is None:
            raise NotFound(f"transaction {txn_id} not found")
        return self._loaded(row)

    async def get_many(
        self, txn_ids: Sequence[TransactionId], *, for_update: bool = False
    ) -> dict[TransactionId, Transaction]:
        """The transactions of ``txn_ids`` that exist, by id (one statement; locked in id order if ``for_update``).
        An id already loaded in this unit of work gives back the same aggregate, so a batch never holds two copies
        of one row; with ``for_update`` its row is locked all the same (a copy loaded earlier without the lock and
        changed since by someone else fails its compare-and-set on save)."""
        if not txn_ids:
            return {}
        loaded = {txn.id: txn for txn in self.seen}
        todo = sorted({i for i in txn_ids if for_update or i not in loaded})
        if todo:
            rows = await self._conn.execute(_GET_MANY_FOR_UPDATE if for_update else _GET_MANY, {"b_ids": padded(todo)})
            for row in rows:
                if row.id not in loaded:
                    txn = self._loaded(row)
                    loaded[txn.id] = txn
        return {i: loaded[i] for i in txn_ids if i in loaded}

    async def _one(self, where: sa.ColumnElement[bool], *, for_update: bool = True) -> Transaction | None:
        stmt = sa.select(transactions).where(where)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return self._loaded(row) if row is not None else None

    async def find_by_checkout_request_id(self, checkout_request_id: str) -> Transaction | None:
        locked = self._locked_by_checkout.get(checkout_request_id)
        if locked is not None:
            return locked
        return await self._one(transactions.c.mpesa_checkout_request_id == checkout_request_id)

    async def find_many_by_checkout_request_ids(self, checkout_request_ids: Sequence[str]) -> dict[str, Transaction]:
        return await self._lock_many(
            _BY_CHECKOUTS_FOR_UPDATE, checkout_request_ids, self._locked_by_checkout, "mpesa_checkout_request_id"
        )

    async def _lock_many(
        self, statement: sa.Select[Any], keys: Sequence[str], locked: dict[str, Transaction], attribute: str
    ) -> dict[str, Transaction]:
        """Find and lock, in one statement, the transactions whose ``attribute`` is one of ``keys``; remembered in
        ``locked`` (key -> aggregate), where the one-at-a-time finds look first."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        loaded = {txn.id: txn for txn in self.seen}
        for row in await self._conn.execute(statement, {"b_keys": padded(wanted)}):
            txn = loaded.get(row.id) or self._loaded(row)
            key = getattr(txn, attribute)
            if key is not None:
                locked[key] = txn
        return {k: locked[k] for k in wanted if k in locked}

    async def find_by_payout_id(self, payout_id: str) -> Transaction | None:
        return await self._one((transactions.c.payout_id == payout_id) | (transactions.c.refund_payout_id == payout_id))

    async def find_by_conversation_id(self, conversation_id: str) -> Transaction | None:
        locked = self._locked_by_conversation.get(conversation_id)
        if locked is not None:
            return locked
        return await self._one(transactions.c.b2c_conversation_id == conversation_id)

    async def find_many_by_conversation_ids(self, conversation_ids: Sequence[str]) -> dict[str, Transaction]:
        return await self._lock_many(
            _BY_CONVERSATIONS_FOR_UPDATE, conversation_ids, self._locked_by_conversation, "b2c_conversation_id"
        )

    async def save(self, txn: Transaction) -> None:
        await self.save_many([txn])

    async def save_many(self, txns: Sequence[Transaction]) -> None:
        """Compare-and-set every aggregate on its ``version``, all in one statement (:func:`_save_changed`); if any row
        has moved on, nothing is saved (``ConcurrencyConflict``: the unit of work is rolled back and retried)."""
        if not txns:
            return
        rows = []
        for txn in txns:
            values = transaction_row(txn)
            values["version"] = txn.version + 1
            rows.append(values)
        if len({t.id for t in txns}) != len(txns):  # one aggregate twice: each saved on its own, every column
            params = [
                {**{f"v_{k}": v for k, v in row.items() if k != "id"}, "b_id": txn.id, "b_version": txn.version}
                for txn, row in zip(txns, rows, strict=True)
            ]
            matched = (await self._conn.execute(_SAVE, params)).rowcount
        else:
            changed = {
                column
                for txn, row in zip(txns, rows, strict=True)
                for column in _changed(row, self._stored.get(id(txn)))
            }
            sql, args = _save_changed(txns, rows, [c for c in _SET_COLUMNS if c in changed])
            if len(txns) == 1:  # a handful of shapes (the columns a step changes): prepared once, reused
                matched = (await self._conn.exec_driver_sql(sql, args)).rowcount
            else:  # a new shape for nearly every batch: as text, not prepared to be run once
                matched = (await run_script(self._conn, [(sql, args)]))[0].rowcount
        if matched != len(txns):
            which = ", ".join(f"{t.id} (version {t.version})" for t in txns)
            raise ConcurrencyConflict(f"transaction(s) changed concurrently: {which}")
        for txn, row in zip(txns, rows, strict=True):
            txn.version += 1
            self._track(txn)
            self._written[id(txn)] = (len(txn.events), len(txn.ledger_transfers))
            self._stored[id(txn)] = row

    async def kes_volume(self, user_id: UserId, kind: Kind, start: datetime, end: datetime) -> Money:
        """KES moved by the user's non-failed transactions of ``kind`` created in [start, end): what deposits took
        from the phone, or the gross KES value (payout plus fee) of withdrawals."""
        gross = (
            transactions.c.amount_kes if kind is Kind.DEPOSIT else transactions.c.amount_kes + transactions.c.fee_kes
        )
        total = await self._conn.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(gross), 0)).where(
                transactions.c.user_id == user_id,
                transactions.c.kind == kind.value,
                transactions.c.created_at >= to_db(start),
                transactions.c.created_at < to_db(end),
                transactions.c.status.not_in([s.value for s in FAILED_STATUSES]),
            )
        )
        return Money(int(total or 0), Currency.KES)

    async def list_for_user(self, user_id: UserId, *, after: TransactionId | None, limit: int) -> Sequence[Transaction]:
        """Newest first; ``after`` is the last id of the previous page (ids sort by creation time)."""
        stmt = sa.select(transactions).where(transactions.c.user_id == user_id)
        if after is not None:
            stmt = stmt.where(transactions.c.id < after)
        rows = await self._conn.execute(stmt.order_by(transactions.c.id.desc()).limit(limit))
        return [_transaction(r) for r in rows]

    async def statuses(self) -> dict[TransactionId, tuple[Kind, Status]]:
        rows = await self._conn.execute(sa.select(transactions.c.id, transactions.c.kind, transactions.c.status))
        return {TransactionId(r.id): (Kind(r.kind), Status(r.status)) for r in rows}

    async def list_by_status(
        self, statuses: Sequence[Status], *, updated_before: datetime | None = None, limit: int = 100
    ) -> Sequence[Transaction]:
        stmt = sa.select(transactions).where(transactions.c.status.in_([s.value for s in statuses]))
        if updated_before is not None:
            stmt = stmt.where(transactions.c.updated_at < to_db(updated_before))
        rows = await self._conn.execute(stmt.order_by(transactions.c.updated_at).limit(limit))
        return [_transaction(r) for r in rows]


class SqlLinkedAccountRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def upsert(self, account: LinkedAccount) -> None:
        values = {
            "user_id": account.user_id,
            "loginid": account.loginid,
            "currency": account.currency,
            "token_ciphertext": account.token_ciphertext,
            "email": account.email,
            "linked_at": to_db(account.linked_at),
            "updated_at": to_db(account.linked_at),
        }
        stmt = mysql.insert(deriv_accounts).values(**values)
        stmt = stmt.on_duplicate_key_update(
            currency=stmt.inserted.currency,
            token_ciphertext=stmt.inserted.token_ciphertext,
            email=stmt.inserted.email,
            updated_at=stmt.inserted.updated_at,
        )
        await self._conn.execute(stmt)

    async def get(self, user_id: UserId, loginid: DerivLoginId) -> LinkedAccount | None:
        return (await self.get_many([(user_id, loginid)])).get((user_id, loginid))

    async def get_many(
        self, keys: Sequence[tuple[UserId, DerivLoginId]]
    ) -> dict[tuple[UserId, DerivLoginId], LinkedAccount]:
        wanted = set(keys)
        if not wanted:
            return {}
        rows = await self._conn.execute(
            _LINKED,
            {"b_users": padded(sorted({u for u, _ in wanted})), "b_logins": padded(sorted({lid for _, lid in wanted}))},
        )
        found = (_linked(row) for row in rows)
        return {(a.user_id, a.loginid): a for a in found if (a.user_id, a.loginid) in wanted}


_LINKED = sa.select(deriv_accounts).where(
    deriv_accounts.c.user_id.in_(sa.bindparam("b_users", expanding=True)),
    deriv_accounts.c.loginid.in_(sa.bindparam("b_logins", expanding=True)),
)


def _linked(row: sa.Row[Any]) -> LinkedAccount:
    return LinkedAccount(
        user_id=UserId(row.user_id),
        loginid=DerivLoginId(row.loginid),
        currency=str(row.currency),
        token_ciphertext=bytes(row.token_ciphertext),
        linked_at=from_db(row.linked_at),
        email=str(row.email),
    )
