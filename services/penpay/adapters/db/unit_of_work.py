"""The SQL unit of work: one MySQL transaction that owns the repositories, the ledger and the outbox.

It rolls back unless committed. ``commit`` first flushes what the aggregates recorded — their ledger transfers (under
row locks), their events (as outbox rows) and an audit row for each — then commits, all in the same database
transaction, and returns the events so the caller can publish them right away (the relay catches any it misses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.audit import SqlAuditLog, event_entry, transfer_entry
from penpay.adapters.db.engine import begin, release
from penpay.adapters.db.idempotency import SqlIdempotencyRepository, SqlProcessedMessages
from penpay.adapters.db.ledger import SqlLedgerRepository
from penpay.adapters.db.outbox import SqlOutbox, numbered
from penpay.adapters.db.repositories import SqlLinkedAccountRepository, SqlTransactionRepository
from penpay_domain import ledger
from penpay_domain.events import TransactionEvent
from penpay_domain.ports import Clock

T = TypeVar("T")
RETRYABLE_MYSQL_ERRORS = frozenset({1205, 1213})  # lock wait timeout, deadlock: the whole unit may be retried


class SqlUnitOfWork:
    transactions: SqlTransactionRepository
    ledger: SqlLedgerRepository
    idempotency: SqlIdempotencyRepository
    processed: SqlProcessedMessages
    audit: SqlAuditLog
    linked_accounts: SqlLinkedAccountRepository
    outbox: SqlOutbox

    def __init__(self, engine: AsyncEngine, clock: Clock, *, actor: str = "system", snapshot: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self.actor = actor
        self._snapshot = snapshot  # read as of one moment (``engine.begin``): for checks across tables
        self._conn: AsyncConnection | None = None
        self._done = False

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    @property
    def now(self) -> datetime:
        return self._now

    async def __aenter__(self) -> Self:
        self._now = self._clock.now()
        conn = self._conn = await begin(self._engine, snapshot=self._snapshot)
        self.transactions = SqlTransactionRepository(conn)
        self.ledger = SqlLedgerRepository(conn, self._now)
        self.idempotency = SqlIdempotencyRepository(conn)
        self.processed = SqlProcessedMessages(conn)
        self.audit = SqlAuditLog(conn)
        self.linked_accounts = SqlLinkedAccountRepository(conn)
        self.outbox = SqlOutbox(conn)
        self._done = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        await release(conn, committed=self._done)

    async def commit(self, *, carried: Collection[str] = ()) -> list[TransactionEvent]:
        """Flush and commit (``carried``: see ``UnitOfWork.commit``). The ledger goes last, right before ``COMMIT``: its
        account rows are the ones every transaction shares (the Deriv float, the M-Pesa accounts), so they are locked
        only for the ledger's own statements, the one audit insert and the commit, never while this transaction writes
        anything else."""
        conn = self.connection
        published: list[TransactionEvent] = []
        flushed: list[tuple[list[ledger.Transfer], list[TransactionEvent]]] = []
        await self.transactions.save_many([t for t in self.transactions.seen if self.transactions.needs_save(t)])
        for txn in self.transactions.seen:
            transfers, events = txn.pull_ledger_transfers(), txn.pull_events()
            flushed.append((transfers, events))
            published.extend(events)
        ids = await self.outbox.add(published, self._now, carried=carried)
        applied = iter(await self.ledger.apply_all([t for transfers, _ in flushed for t in transfers]))
        await self.audit.append_many(
            actor=self.actor,
            entries=[
                entry
                for transfers, events in flushed
                for entry in [
                    *(transfer_entry(t) for t in transfers if next(applied)),
                    *(event_entry(e) for e in events),
                ]
            ],
            now=self._now,
        )
        await self.audit.flush()
        await self.ledger.flush()  # the shared accounts' row locks: last, right before the commit
        await conn.commit()
        self._done = True
        return numbered(published, ids)

    async def rollback(self) -> None:
        await self.connection.rollback()
        self._done = True


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError) and exc.orig is not None and exc.orig.args:
        return exc.orig.args[0] in RETRYABLE_MYSQL_ERRORS
    return False


async def with_retries(attempt: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
    """Run a whole unit of work again after a deadlock or lock-wait timeout (nothing of the failed try was kept)."""
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except OperationalError as exc:
            if n == attempts or not is_retryable(exc):
                raise
    raise AssertionError("unreachable")
