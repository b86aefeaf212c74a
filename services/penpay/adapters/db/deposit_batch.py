"""The SQL side of batched deposit initiation (``service_layer.deposit_batch``): one MySQL transaction a batch.

Every step is one statement for the whole batch — the existing keys, the users' limit locks, the day's volumes, the
ledger accounts (read without a lock), then one multi-row INSERT per table (transactions, ledger transfers and
entries, idempotency answers, audit rows, outbox), and last one relative UPDATE of the accounts' counters right
before the COMMIT, so the accounts every deposit shares are locked only for that statement and the commit. So a batch
of 50 deposits costs about the same round trips as one did before (``adapters.db.multirow``: statements as written,
values bound; outbox ids as the server assigns them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.audit import event_entry, pending_row, transfer_entry
from penpay.adapters.db.engine import begin, release, to_db
from penpay.adapters.db.ledger import account_from_row, add_to_counters, counter_deltas, entry_rows, transfer_row
from penpay.adapters.db.multirow import insert_rows, marks
from penpay.adapters.db.outbox import SqlOutbox
from penpay.adapters.db.repositories import FAILED_STATUSES, transaction_row
from penpay.service_layer.deposit_batch import Created, DepositBatchStore, KeyAnswer
from penpay_domain import ledger
from penpay_domain.events import TransactionEvent
from penpay_domain.ids import IdempotencyKey, UserId
from penpay_domain.money import Currency, Money
from penpay_domain.ports import Clock
from penpay_domain.transaction import Kind

_COUNTERS = ledger.COUNTERS


class SqlDepositBatch:
    """One batch's database transaction. Rolled back unless ``write`` committed it."""

    def __init__(self, engine: AsyncEngine, clock: Clock, *, lock: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = lock
        self._conn: AsyncConnection | None = None
        self._committed = False
        self._now = clock.now()  # set again when the transaction begins

    @property
    def now(self) -> datetime:
        return self._now

    async def __aenter__(self) -> Self:
        self._now = self._clock.now()
        self._conn = await begin(self._engine)
        self._committed = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        await release(conn, committed=self._committed)

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._conn is None:
            raise RuntimeError("the batch transaction is not open")
        return await self._conn.exec_driver_sql(sql, tuple(params))

    async def taken_keys(self, keys: Sequence[IdempotencyKey]) -> set[IdempotencyKey]:
        if not keys:
            return set()
        users = sorted({k.user_id for k in keys})
        names = sorted({k.key for k in keys})
        rows = await self._run(
            f"SELECT user_id, idem_key FROM idempotency_keys WHERE user_id IN ({marks(len(users))}) "  # noqa: S608 - placeholders only
            f"AND idem_key IN ({marks(len(names))})",
            [*users, *names],
        )
        found = {(str(r[0]), str(r[1])) for r in rows}
        return {k for k in keys if (k.user_id, k.key) in found}

    async def lock_users(self, user_ids: Sequence[UserId]) -> None:
        # INSERT … ON DUPLICATE KEY UPDATE takes each row's exclusive lock at once, in the order given (sorted).
        at = to_db(self._now)
        await self._run(
            f"INSERT INTO user_limits (user_id, locked_at) VALUES {marks(len(user_ids), 2)} "  # noqa: S608
            "ON DUPLICATE KEY UPDATE locked_at = VALUES(locked_at)",
            [v for u in user_ids for v in (u, at)],
        )

    async def deposit_volumes(self, user_ids: Sequence[UserId], start: datetime, end: datetime) -> dict[UserId, Money]:
        failed = [s.value for s in FAILED_STATUSES]
        rows = await self._run(
            "SELECT user_id, COALESCE(SUM(amount_kes), 0) FROM transactions "  # noqa: S608
            f"WHERE user_id IN ({marks(len(user_ids))}) AND kind = %s AND created_at >= %s AND created_at < %s "
            f"AND status NOT IN ({marks(len(failed))}) GROUP BY user_id",
            [*user_ids, Kind.DEPOSIT.value, to_db(start), to_db(end), *failed],
        )
        return {UserId(str(r[0])): Money(int(r[1]), Currency.KES) for r in rows}

    async def accounts(self, codes: Sequence[str]) -> dict[str, ledger.Account]:
        rows = await self._run(
            f"SELECT code, currency, rule, {', '.join(_COUNTERS)} FROM ledger_accounts "  # noqa: S608
            f"WHERE code IN ({marks(len(codes))}) ORDER BY code" + (" FOR UPDATE" if self._lock else ""),
            codes,
        )
        accounts = {a.code: a for a in map(account_from_row, rows)}
        missing = set(codes) - set(accounts)
        if missing:
            raise RuntimeError(f"ledger accounts missing from the chart: {sorted(missing)}")
        return accounts

    async def write(
        self,
        *,
        created: Sequence[Created],
        before: Mapping[str, ledger.Account],
        after: Mapping[str, ledger.Account],
        answers: Sequence[KeyAnswer],
    ) -> list[TransactionEvent]:
        at = to_db(self._now)
        if created:
            await self._insert("transactions", [transaction_row(c.txn) for c in created])
            transfers = [t for c in created for t in c.transfers]
            await self._insert("ledger_transfers", [transfer_row(t, at) for t in transfers])
            await self._insert("ledger_entries", [e for t in transfers for e in entry_rows(t, t.postings, at)])
        if answers:
            await self._insert("idempotency_keys", [_answer_row(a, at) for a in answers])
        audit = [
            pending_row(f"user:{c.txn.parties.user_id}", entry, self._now)
            for c in created
            for entry in [*map(transfer_entry, c.transfers), *map(event_entry, c.events)]
        ]
        if audit:
            await self._insert("audit_pending", audit)
        events = [e for c in created for e in c.events]
        ids = await self._outbox(events)
        if self._conn is None:
            raise RuntimeError("the batch transaction is not open")
        # last, right before the commit: the shared accounts' row locks, for this one statement and the commit
        rules = {code: a.rule for code, a in before.items()}
        await add_to_counters(self._conn, counter_deltas(before, after), self._now, rules)
        await self._conn.commit()
        self._committed = True
        return [_with_id(event, event_id) for event, event_id in zip(events, ids, strict=True)]

    async def _insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        if self._conn is None:
            raise RuntimeError("the batch transaction is not open")
        return await insert_rows(self._conn, table, rows)

    async def _outbox(self, events: Sequence[TransactionEvent]) -> list[int]:
        if self._conn is None:
            raise RuntimeError("the batch transaction is not open")
        return await SqlOutbox(self._conn).add(events, self._now)


def _answer_row(a: KeyAnswer, at: datetime) -> dict[str, Any]:
    return {
        "user_id": a.key.user_id,
        "idem_key": a.key.key,
        "request_hash": a.request_hash,
        "status_code": a.status_code,
        "response_body": a.body,
        "transaction_id": a.transaction_id,
        "created_at": at,
    }


def _with_id(event: TransactionEvent, event_id: int) -> TransactionEvent:
    return replace(event, event_id=event_id)


class SqlDepositBatches:
    """Opens one :class:`SqlDepositBatch` per batch (the ``store`` of ``initiate_deposits``)."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def open(self, *, lock: bool = False) -> SqlDepositBatch:
        """``lock``: read the ledger accounts ``FOR UPDATE`` (after a batch lost a race for the last of a float)."""
        return SqlDepositBatch(self._engine, self._clock, lock=lock)


def _conforms(engine: AsyncEngine, clock: Clock) -> DepositBatchStore:
    return SqlDepositBatch(engine, clock)  # mypy checks the protocol
