"""The SQL side of batched initiation (``service_layer.batch_initiation``): one MySQL transaction a batch.

Every step is one statement for the whole batch, and the statements go in two round trips (``adapters.db.script``)
and a COMMIT: first the reads — the existing keys, the users' limit locks, the day's volumes, the ledger accounts
(read without a lock), for withdrawals the linked Deriv accounts —, then one multi-row INSERT per table
(transactions, withdrawal codes, ledger transfers and entries, idempotency answers, audit rows, outbox) and last one
relative UPDATE of the accounts' counters, so the accounts every request shares are locked only for that statement
and the commit. So a batch of 50 requests costs the round trips one did (``adapters.db.multirow``: statements as
written, values bound; outbox ids as the server assigns them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.audit import event_entry, pending_row, transfer_entry
from penpay.adapters.db.engine import begin, release, to_db
from penpay.adapters.db.ledger import (
    ACCOUNT_COLUMNS,
    account_from_values,
    counter_deltas,
    counters_refused,
    counters_update,
    counters_updated,
    entry_rows,
    transfer_row,
)
from penpay.adapters.db.multirow import consecutive_ids_on, id_statements, ids_of, insert_statement, marks
from penpay.adapters.db.outbox import numbered, outbox_rows
from penpay.adapters.db.repositories import FAILED_STATUSES, transaction_row
from penpay.adapters.db.script import Statement, run_script
from penpay.adapters.tokens import SecretBox
from penpay.service_layer.batch_initiation import BatchReads, BatchStore, Created, KeyAnswer
from penpay_domain import ledger
from penpay_domain.events import TransactionEvent
from penpay_domain.ids import DerivLoginId, IdempotencyKey, UserId
from penpay_domain.money import Currency, Money
from penpay_domain.ports import Clock
from penpay_domain.transaction import Kind


class SqlInitiationBatch:
    """One batch's database transaction. Rolled back unless ``write`` committed it. ``box`` seals withdrawals'
    verification codes."""

    def __init__(self, engine: AsyncEngine, clock: Clock, box: SecretBox, *, lock: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._box = box
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

    @property
    def _connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the batch transaction is not open")
        return self._conn

    async def read(
        self,
        *,
        kind: Kind,
        keys: Sequence[IdempotencyKey],
        users: Sequence[UserId],
        window: tuple[datetime, datetime],
        codes: Sequence[str],
        logins: Sequence[tuple[UserId, DerivLoginId]] = (),
    ) -> BatchReads:
        # the (user, key) pairs asked, as a row-constructor IN: one primary-key lookup each. ``user_id IN (…) AND
        # idem_key IN (…)`` asked for every user x key combination, which the optimizer gives up enumerating beyond
        # a few hundred and scans every key each user has instead (~15 rows per deposit read in a bench run)
        pairs = sorted({(str(k.user_id), k.key) for k in keys})
        gross = "amount_kes" if kind is Kind.DEPOSIT else "amount_kes + fee_kes"  # what the day's limit counts
        failed = [s.value for s in FAILED_STATUSES]
        statements: list[Statement] = [
            (
                f"SELECT user_id, idem_key FROM idempotency_keys WHERE (user_id, idem_key) IN ({marks(len(pairs), 2)})"  # noqa: S608 - placeholders only
                if pairs
                else "SELECT user_id, idem_key FROM idempotency_keys WHERE FALSE",
                [v for pair in pairs for v in pair],
            ),
            # INSERT … ON DUPLICATE KEY UPDATE takes each row's exclusive lock at once, in the order given (sorted)
            (
                f"INSERT INTO user_limits (user_id, locked_at) VALUES {marks(len(users), 2)} "  # noqa: S608
                "ON DUPLICATE KEY UPDATE locked_at = VALUES(locked_at)",
                [v for u in users for v in (u, to_db(self._now))],
            ),
            (
                f"SELECT user_id, COALESCE(SUM({gross}), 0) FROM transactions "  # noqa: S608
                f"WHERE user_id IN ({marks(len(users))}) AND kind = %s AND created_at >= %s AND created_at < %s "
                f"AND status NOT IN ({marks(len(failed))}) GROUP BY user_id",
                [*users, kind.value, to_db(window[0]), to_db(window[1]), *failed],
            ),
        ]
        linked_at = len(statements)
        if logins:
            login_ids = sorted({lid for _, lid in logins})
            statements.append(
                (
                    f"SELECT user_id, loginid FROM deriv_accounts WHERE user_id IN ({marks(len(users))}) "  # noqa: S608
                    f"AND loginid IN ({marks(len(login_ids))})",
                    [*users, *login_ids],
                )
            )
        accounts_at = len(statements)
        if codes:
            statements.append(
                (
                    f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM ledger_accounts "  # noqa: S608
                    f"WHERE code IN ({marks(len(codes))}) ORDER BY code" + (" FOR UPDATE" if self._lock else ""),
                    codes,
                )
            )
        results = await run_script(self._connection, statements)
        found = {(str(r[0]), str(r[1])) for r in results[0].rows}
        accounts = {a.code: a for a in map(account_from_values, results[accounts_at].rows)} if codes else {}
        asked = set(logins)
        linked = {(UserId(str(r[0])), DerivLoginId(str(r[1]))) for r in results[linked_at].rows} if logins else set()
        missing = set(codes) - set(accounts)
        if missing:
            raise RuntimeError(f"ledger accounts missing from the chart: {sorted(missing)}")
        return BatchReads(
            taken={k for k in keys if (k.user_id, k.key) in found},
            volumes={UserId(str(r[0])): Money(int(r[1]), Currency.KES) for r in results[2].rows},
            accounts=accounts,
            linked=linked & asked,  # the query matched users and login ids independently
        )

    async def write(
        self,
        *,
        created: Sequence[Created],
        before: Mapping[str, ledger.Account],
        after: Mapping[str, ledger.Account],
        answers: Sequence[KeyAnswer],
    ) -> list[TransactionEvent]:
        """One round trip for every row and the counters (``adapters.db.script``), then the commit."""
        conn = self._connection
        at = to_db(self._now)
        statements: list[Statement] = []
        if created:
            transfers = [t for c in created for t in c.transfers]
            statements.append(insert_statement("transactions", [transaction_row(c.txn) for c in created]))
            codes = [
                {"transaction_id": c.txn.id, "code_ciphertext": self._box.seal(c.code), "created_at": at}
                for c in created
                if c.code is not None
            ]
            if codes:
                statements.append(insert_statement("withdrawal_codes", codes))
            statements.append(insert_statement("ledger_transfers", [transfer_row(t, at) for t in transfers]))
            statements.append(
                insert_statement("ledger_entries", [e for t in transfers for e in entry_rows(t, t.postings, at)])
            )
        if answers:
            statements.append(insert_statement("idempotency_keys", [_answer_row(a, at) for a in answers]))
        audit = [
            (f"user:{c.txn.parties.user_id}", entry)
            for c in created
            for entry in [*map(transfer_entry, c.transfers), *map(event_entry, c.events)]
        ]
        if audit:
            statements.append(insert_statement("audit_pending", [pending_row(self._now, audit)]))
        events = [e for c in created for e in c.events]
        consecutive = await consecutive_ids_on(conn)
        first_event = len(statements)
        rows = outbox_rows(events, self._now)
        statements.extend(id_statements("outbox", rows, consecutive=consecutive))
        # last, right before the commit: the shared accounts' row locks, for this one statement and the commit
        deltas = counter_deltas(before, after)
        counters = counters_update(deltas, self._now)
        if counters is not None:
            statements.append(counters)
        try:
            results = await run_script(conn, statements)
        except OperationalError as exc:
            counters_refused(exc, deltas, {code: a.rule for code, a in before.items()})
        if counters is not None:
            counters_updated(deltas, results[-1].rowcount)
        await conn.commit()
        self._committed = True
        return numbered(
            events, ids_of([r.lastrowid for r in results[first_event:]], len(rows), consecutive=consecutive)
        )


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


class SqlInitiationBatches:
    """Opens one :class:`SqlInitiationBatch` per batch (the ``store`` of ``initiate_batch``)."""

    def __init__(self, engine: AsyncEngine, clock: Clock, box: SecretBox) -> None:
        self._engine = engine
        self._clock = clock
        self._box = box

    async def open(self, *, lock: bool = False) -> SqlInitiationBatch:
        """``lock``: read the ledger accounts ``FOR UPDATE`` (after a batch lost a race for the last of a float)."""
        return SqlInitiationBatch(self._engine, self._clock, self._box, lock=lock)


def _conforms(engine: AsyncEngine, clock: Clock, box: SecretBox) -> BatchStore:
    return SqlInitiationBatch(engine, clock, box)  # mypy checks the protocol
