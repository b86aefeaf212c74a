"""The ledger repository: applies domain ``Transfer``s to MySQL.

A few accounts (the Deriv float, the M-Pesa accounts, the FX positions) are touched by every transaction, so how
long their rows stay locked bounds the whole platform's throughput. ``apply_all`` (the unit of work's path) therefore
never locks them while it decides: it reads the accounts as committed (plus this transaction's own staged changes),
lets the pure ``penpay_domain.ledger.apply`` decide, inserts the transfer rows (their unique ids and ``pending_id``
make a repeat or a second resolution fail) and the entry rows (no foreign key to the accounts, so no lock on them:
migration 0005), and *stages* the counter changes. ``flush`` — the unit of work's last statement before ``COMMIT`` —
writes the counters as one relative ``UPDATE`` (rows locked in key order, so writers never deadlock on each other),
refusing the transaction unless every account it names exists. The table's CHECK constraints are the final
word on the balance rules: if a concurrent transaction spent what the snapshot showed, the ``UPDATE`` is refused and
``InsufficientFunds`` raised, exactly as the domain would have. A resolution locks its pending transfer's row first,
so two resolutions of one reservation take turns. The one-by-one path (``_apply_one``: lock, read, decide, write)
remains for transfers that depend on each other within one call and for races on a transfer id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.multirow import insert_rows
from penpay.adapters.db.tables import ledger_accounts, ledger_entries, ledger_transfers
from penpay_domain import ledger as dl
from penpay_domain.errors import InsufficientFunds, NotFound, PendingTransferResolved
from penpay_domain.money import Currency, Money
from penpay_domain.transaction import LegState

_COUNTERS = dl.COUNTERS


CHECK_FAILED = frozenset({4025, 3819})  # MariaDB ER_CONSTRAINT_FAILED, MySQL ER_CHECK_CONSTRAINT_VIOLATED


def counter_deltas(before: Mapping[str, dl.Account], after: Mapping[str, dl.Account]) -> dict[str, dict[str, int]]:
    """What changed, per account and counter (non-zero only)."""
    out: dict[str, dict[str, int]] = {}
    for code, new in after.items():
        old = before[code]
        changed = {c: getattr(new, c) - getattr(old, c) for c in _COUNTERS if getattr(new, c) != getattr(old, c)}
        if changed:
            out[code] = changed
    return out


def merge_deltas(into: dict[str, dict[str, int]], more: Mapping[str, Mapping[str, int]]) -> None:
    for code, changed in more.items():
        mine = into.setdefault(code, {})
        for counter, delta in changed.items():
            mine[counter] = mine.get(counter, 0) + delta


async def add_to_counters(
    conn: AsyncConnection, deltas: Mapping[str, Mapping[str, int]], now: datetime, rules: Mapping[str, dl.BalanceRule]
) -> None:
    """Add ``deltas`` to the accounts' counters in one ``UPDATE`` (rows locked in key order, for this statement and
    the commit that should follow at once). The table's CHECK constraints are the final word on the balance rules
    under concurrency: a breach raises ``InsufficientFunds`` naming the rule-bound accounts that grew."""
    statement = counters_update(deltas, now)
    if statement is None:
        return
    try:
        result = await conn.exec_driver_sql(statement[0], tuple(statement[1]))
    except OperationalError as exc:
        counters_refused(exc, deltas, rules)
    counters_updated(deltas, result.rowcount)


def counters_update(deltas: Mapping[str, Mapping[str, int]], now: datetime) -> tuple[str, list[object]] | None:
    """The ``UPDATE`` of :func:`add_to_counters` and its values (None if nothing changes), for a caller that sends
    it with other statements (``adapters.db.script``) and then checks with :func:`counters_updated`."""
    codes = sorted(deltas)
    if not codes:
        return None
    counters = [c for c in _COUNTERS if any(c in deltas[code] for code in codes)]
    params: list[object] = []
    sets = []
    for counter in counters:
        cases = " ".join("WHEN %s THEN %s" for _ in codes)
        sets.append(f"{counter} = {counter} + CASE code {cases} ELSE 0 END")
        params.extend(v for code in codes for v in (code, deltas[code].get(counter, 0)))
    params.append(to_db(now))
    params.extend(codes)
    marks = ", ".join(["%s"] * len(codes))
    return f"UPDATE ledger_accounts SET {', '.join(sets)}, updated_at = %s WHERE code IN ({marks})", params  # noqa: S608


def counters_refused(
    exc: OperationalError, deltas: Mapping[str, Mapping[str, int]], rules: Mapping[str, dl.BalanceRule]
) -> NoReturn:
    """Raise what the counters' ``UPDATE`` failing with ``exc`` means: ``InsufficientFunds`` if a CHECK constraint
    refused it (a balance rule would break), else ``exc`` itself."""
    if exc.orig is not None and exc.orig.args and exc.orig.args[0] in CHECK_FAILED:
        bound = [c for c in sorted(deltas) if rules.get(c, dl.BalanceRule.NONE) is not dl.BalanceRule.NONE]
        raise InsufficientFunds(
            f"the balance rule of {', '.join(bound) or 'an account'} would break", account=bound[0] if bound else None
        ) from exc
    raise exc


def counters_updated(deltas: Mapping[str, Mapping[str, int]], rowcount: int) -> None:
    """Refuse the transaction unless the counters' ``UPDATE`` found every account it names."""
    if rowcount != len(deltas):
        raise NotFound(f"ledger accounts missing: some of {sorted(deltas)}")


def transfer_row(transfer: dl.Transfer, at: datetime) -> dict[str, object]:
    """The ``ledger_transfers`` row of a transfer (``at``: naive UTC, as the column stores it)."""
    return {
        "id": transfer.id,
        "kind": transfer.kind.value,
        "pending_id": transfer.pending_id,
        "transaction_id": transfer.transaction_id,
        "memo": transfer.memo[:64],
        "created_at": at,
    }


def entry_rows(transfer: dl.Transfer, postings: Sequence[dl.Posting], at: datetime) -> list[dict[str, object]]:
    """The ``ledger_entries`` rows of a transfer: a debit and a credit per posting (a resolution's are those of the
    pending transfer it resolves)."""
    return [
        {
            "transfer_id": transfer.id,
            "posting": i,
            "account_code": code,
            "direction": direction,
            "transfer_kind": transfer.kind.value,
            "amount": p.amount.minor,
            "currency": p.amount.currency.value,
            "created_at": at,
        }
        for i, p in enumerate(postings)
        for direction, code in (("D", p.debit), ("C", p.credit))
    ]


ACCOUNT_COLUMNS = ("code", "currency", "rule", *_COUNTERS)


def account_from_values(values: Sequence[object]) -> dl.Account:
    """An account from a row of :data:`ACCOUNT_COLUMNS`, in that order (a driver's plain tuple)."""
    return account_from_row(dict(zip(ACCOUNT_COLUMNS, values, strict=True)))


def account_from_row(row: sa.Row[tuple[object, ...]] | Mapping[str, Any]) -> dl.Account:
    m = row if isinstance(row, Mapping) else row._mapping
    return dl.Account(
        code=str(m["code"]),
        currency=Currency(m["currency"]),
        rule=dl.BalanceRule(m["rule"]),
        debits_pending=int(m["debits_pending"]),
        debits_posted=int(m["debits_posted"]),
        credits_pending=int(m["credits_pending"]),
        credits_posted=int(m["credits_posted"]),
    )


class SqlLedgerRepository:
    def __init__(self, conn: AsyncConnection, now: datetime) -> None:
        self._conn = conn
        self._now = now
        self._staged: dict[str, dict[str, int]] = {}  # counter changes not yet written (see ``flush``)
        self._rules: dict[str, dl.BalanceRule] = {}

    async def flush(self) -> None:
        """Write the counter changes ``apply_all`` staged: one relative ``UPDATE``, which takes the accounts' row
        locks. The unit of work calls it last before ``COMMIT``, so the shared accounts are locked for that one
        statement and the commit, never across the rest of the transaction; every read of this repository flushes
        first, so it always sees its own writes."""
        staged, self._staged = self._staged, {}
        await add_to_counters(self._conn, staged, self._now, self._rules)

    async def ensure_chart(self, specs: Sequence[dl.AccountSpec] = dl.CHART) -> None:
        """Open every account of the chart that does not exist yet (idempotent)."""
        for spec in specs:
            await self.open_account(spec)

    async def open_account(self, spec: dl.AccountSpec) -> None:
        stmt = (
            mysql.insert(ledger_accounts)
            .values(
                code=spec.code,
                currency=spec.currency.value,
                rule=spec.rule.value,
                updated_at=to_db(self._now),
                **dict.fromkeys(_COUNTERS, 0),
            )
            .prefix_with("IGNORE")
        )
        await self._conn.execute(stmt)

    async def account(self, code: str, *, for_update: bool = False) -> dl.Account:
        await self.flush()
        stmt = sa.select(ledger_accounts).where(ledger_accounts.c.code == code)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"ledger account {code} not found")
        return account_from_row(row)

    async def accounts(self) -> Sequence[dl.Account]:
        await self.flush()
        rows = await self._conn.execute(sa.select(ledger_accounts).order_by(ledger_accounts.c.code))
        return [account_from_row(r) for r in rows]

    async def transfer(self, transfer_id: str, *, for_update: bool = False) -> dl.Transfer | None:
        """``for_update``: lock the transfer's row, as a resolution does, so that two resolutions of one pending
        transfer take turns (the second then sees the first) instead of racing on the unique ``pending_id``."""
        found = await self._transfers([transfer_id], for_update=for_update)
        return found.get(transfer_id)

    async def _transfers(self, transfer_ids: Sequence[str], *, for_update: bool = False) -> dict[str, dl.Transfer]:
        """The transfers of ``transfer_ids`` that exist, with their postings: two statements for all of them (their
        rows locked in id order with ``for_update``, looked up by their unique ``id``: the hint keeps MariaDB from
        scanning a small table, which would lock rows other transactions are inserting)."""
        await self.flush()
        if not transfer_ids:
            return {}
        ids = {"b_ids": padded(sorted(set(transfer_ids)))}
        heads = (await self._conn.execute(_TRANSFERS_FOR_UPDATE if for_update else _TRANSFERS, ids)).all()
        if not heads:
            return {}
        rows = (await self._conn.execute(_ENTRIES, {"b_ids": padded(h.id for h in heads)})).all()
        legs: dict[str, dict[int, dict[str, sa.Row[tuple[object, ...]]]]] = {}
        for r in rows:
            legs.setdefault(str(r.transfer_id), {}).setdefault(int(r.posting), {})[str(r.direction)] = r
        return {str(head.id): _transfer(head, legs.get(str(head.id), {})) for head in heads}

    async def apply(self, transfer: dl.Transfer) -> bool:
        """Apply ``transfer``. Returns False, writing nothing, if a transfer with this id already exists, so a
        repeated step is harmless. Raises the domain's ledger errors (e.g. ``InsufficientFunds``)."""
        return (await self.apply_all([transfer]))[0]

    async def apply_all(self, transfers: Sequence[dl.Transfer]) -> list[bool]:
        """Apply several transfers in order, as ``apply`` would one by one, without locking the accounts: decide on
        a snapshot, insert the transfer rows, stage the counters and entries for ``flush`` (see the module
        docstring). Transfers that depend on each other within the call, or a concurrent insert of the same id,
        take the one-by-one path instead."""
        if not transfers:
            return []
        ids = [t.id for t in transfers]
        if len(set(ids)) != len(ids) or any(t.pending_id in ids for t in transfers):
            return [await self._apply_one(t) for t in transfers]
        existing = set(
            (await self._conn.execute(sa.select(ledger_transfers.c.id).where(ledger_transfers.c.id.in_(padded(ids)))))
            .scalars()
            .all()
        )
        todo = [t for t in transfers if t.id not in existing]
        wanted = sorted({t.pending_id for t in todo if t.pending_id is not None})
        pendings = await self._transfers(wanted, for_update=True)
        missing = [i for i in wanted if i not in pendings]
        if missing:
            raise NotFound(f"pending transfer {missing[0]} not found")
        resolved: set[str] = set()
        if pendings:
            resolved = {
                str(r)
                for r in (
                    await self._conn.execute(
                        sa.select(ledger_transfers.c.pending_id).where(
                            ledger_transfers.c.pending_id.in_(padded(pendings))
                        )
                    )
                ).scalars()
            }
        postings = {t.id: pendings[t.pending_id].postings if t.pending_id else t.postings for t in todo}
        codes = sorted({c for ps in postings.values() for p in ps for c in (p.debit, p.credit)})
        if not todo:
            return [False] * len(transfers)
        locked = await self._snapshot(codes)
        working = dict(locked)
        for t in todo:
            pending = pendings.get(t.pending_id) if t.pending_id else None
            working.update(
                dl.apply(working, t, pending, already_resolved=t.pending_id is not None and t.pending_id in resolved)
            )
            if t.pending_id is not None:
                resolved.add(t.pending_id)
        try:
            await insert_rows(self._conn, ledger_transfers.name, [transfer_row(t, to_db(self._now)) for t in todo])
        except IntegrityError:
            # someone committed one of these concurrently; nothing of this statement was kept: decide one by one
            return [await self._apply_one(t) for t in transfers]
        await insert_rows(
            self._conn, ledger_entries.name, [e for t in todo for e in entry_rows(t, postings[t.id], to_db(self._now))]
        )  # no lock on the accounts: entries have no foreign key to them (migration 0005)
        merge_deltas(self._staged, counter_deltas(locked, working))
        return [t.id not in existing for t in transfers]

    async def _snapshot(self, codes: Sequence[str]) -> dict[str, dl.Account]:
        """The accounts as committed, plus this unit of work's staged changes, read without a lock: the domain
        decides on it; the relative ``UPDATE`` in ``flush`` and the table's CHECK constraints settle any race."""
        rows = await self._conn.execute(sa.select(ledger_accounts).where(ledger_accounts.c.code.in_(padded(codes))))
        accounts = {a.code: a for a in map(account_from_row, rows)}
        for code, account in accounts.items():
            self._rules[code] = account.rule
            staged = self._staged.get(code)
            if staged:
                accounts[code] = replace(account, **{c: getattr(account, c) + d for c, d in staged.items()})
        return accounts

    async def _lock(self, codes: Sequence[str]) -> dict[str, dl.Account]:
        rows = await self._conn.execute(
            sa.select(ledger_accounts)
            .where(ledger_accounts.c.code.in_(padded(codes)))
            .order_by(ledger_accounts.c.code)
            .with_for_update()
        )
        return {a.code: a for a in map(account_from_row, rows)}

    async def _store(self, accounts: Iterable[dl.Account]) -> None:
        """The new counters of locked accounts, in one statement (each row exists, so the upsert only updates)."""
        rows = [
            {
                "code": a.code,
                "currency": a.currency.value,
                "rule": a.rule.value,
                **{c: getattr(a, c) for c in _COUNTERS},
                "updated_at": to_db(self._now),
            }
            for a in accounts
        ]
        if not rows:
            return
        stmt = mysql.insert(ledger_accounts).values(rows)
        await self._conn.execute(
            stmt.on_duplicate_key_update(
                **{c: getattr(stmt.inserted, c) for c in (*_COUNTERS, "updated_at")},
            )
        )

    async def _apply_one(self, transfer: dl.Transfer) -> bool:
        await self.flush()
        exists = await self._conn.scalar(sa.select(ledger_transfers.c.seq).where(ledger_transfers.c.id == transfer.id))
        if exists is not None:
            return False
        pending: dl.Transfer | None = None
        resolved = False
        postings = transfer.postings
        if transfer.pending_id is not None:
            pending = await self.transfer(transfer.pending_id, for_update=True)
            if pending is None:
                raise NotFound(f"pending transfer {transfer.pending_id} not found")
            postings = pending.postings
            resolved = (
                await self._conn.scalar(
                    sa.select(ledger_transfers.c.seq).where(ledger_transfers.c.pending_id == transfer.pending_id)
                )
                is not None
            )
        locked = await self._lock(sorted({c for p in postings for c in (p.debit, p.credit)}))
        changed = dl.apply(locked, transfer, pending, already_resolved=resolved)
        try:
            await self._conn.execute(ledger_transfers.insert().values(**transfer_row(transfer, to_db(self._now))))
        except IntegrityError as exc:
            message = str(exc.orig)
            if "uq_ledger_transfers_id" in message:
                return False  # the same step, committed concurrently by someone else: already applied
            if transfer.pending_id is not None and "pending_id" in message:
                raise PendingTransferResolved(f"pending transfer {transfer.pending_id} was already resolved") from exc
            raise
        await self._store(changed.values())
        await insert_rows(self._conn, ledger_entries.name, entry_rows(transfer, postings, to_db(self._now)))
        return True

    async def leg_states(self) -> dict[str, dict[str, LegState]]:
        """Each transaction's legs as the ledger shows them: pending unless a post or void transfer resolved it."""
        await self.flush()
        t = ledger_transfers
        rows = await self._conn.execute(
            sa.select(t.c.id, t.c.kind, t.c.pending_id, t.c.transaction_id).where(t.c.transaction_id.is_not(None))
        )
        out: dict[str, dict[str, LegState]] = {}
        resolutions: dict[str, LegState] = {}
        heads: list[tuple[str, str, str]] = []
        for r in rows:
            kind = dl.TransferKind(r.kind)
            if kind is dl.TransferKind.POST_PENDING:
                resolutions[str(r.pending_id)] = LegState.POSTED
            elif kind is dl.TransferKind.VOID_PENDING:
                resolutions[str(r.pending_id)] = LegState.VOIDED
            else:
                heads.append((str(r.transaction_id), str(r.id), str(r.kind)))
        for txn_id, transfer_id, kind_value in heads:
            leg = transfer_id.removeprefix(f"{txn_id}:")
            if kind_value == dl.TransferKind.POSTED.value:
                state = LegState.POSTED
            else:
                state = resolutions.get(transfer_id, LegState.PENDING)
            out.setdefault(txn_id, {})[leg] = state
        return out

    async def entry_totals(self) -> dict[str, dict[str, int]]:
        """Each account's four counters recomputed from the entries (for the invariant check)."""
        await self.flush()
        kind, d = ledger_entries.c.transfer_kind, ledger_entries.c.direction
        amount = ledger_entries.c.amount

        def total(direction: str, kinds: tuple[str, ...], sign: int = 1) -> sa.ColumnElement[int]:
            return sa.func.coalesce(
                sa.func.sum(sa.case(((d == direction) & kind.in_(kinds), amount * sign), else_=0)), 0
            )

        pend, post = dl.TransferKind.PENDING.value, dl.TransferKind.POSTED.value
        done = (dl.TransferKind.POST_PENDING.value, dl.TransferKind.VOID_PENDING.value)
        stmt = sa.select(
            ledger_entries.c.account_code,
            (total("D", (pend,)) - total("D", done)).label("debits_pending"),
            total("D", (post, dl.TransferKind.POST_PENDING.value)).label("debits_posted"),
            (total("C", (pend,)) - total("C", done)).label("credits_pending"),
            total("C", (post, dl.TransferKind.POST_PENDING.value)).label("credits_posted"),
        ).group_by(ledger_entries.c.account_code)
        rows = await self._conn.execute(stmt)
        return {str(r.account_code): {c: int(getattr(r, c)) for c in _COUNTERS} for r in rows}


# built once, their id lists bound (see adapters.db.repositories)
_TRANSFERS = (
    sa.select(ledger_transfers)
    .with_hint(ledger_transfers, "FORCE INDEX (uq_ledger_transfers_id)")
    .where(ledger_transfers.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    .order_by(ledger_transfers.c.id)
)
_TRANSFERS_FOR_UPDATE = _TRANSFERS.with_for_update()
_ENTRIES = (
    sa.select(ledger_entries)
    .where(ledger_entries.c.transfer_id.in_(sa.bindparam("b_ids", expanding=True)))
    .order_by(ledger_entries.c.transfer_id, ledger_entries.c.posting, ledger_entries.c.direction.desc())
)


def _transfer(head: sa.Row[tuple[object, ...]], legs: dict[int, dict[str, sa.Row[tuple[object, ...]]]]) -> dl.Transfer:
    postings = tuple(
        dl.Posting(
            debit=str(leg["D"].account_code),
            credit=str(leg["C"].account_code),
            amount=Money(int(leg["D"].amount), Currency(leg["D"].currency)),
        )
        for _, leg in sorted(legs.items())
    )
    kind = dl.TransferKind(head.kind)
    resolves = kind in (dl.TransferKind.POST_PENDING, dl.TransferKind.VOID_PENDING)
    return dl.Transfer(
        id=str(head.id),
        kind=kind,
        postings=() if resolves else postings,
        pending_id=head.pending_id,
        transaction_id=head.transaction_id,
        memo=str(head.memo),
    )
