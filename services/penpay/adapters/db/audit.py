"""The hash-chained audit log (ARCHITECTURE §9).

Each row stores ``prev_hash`` and ``hash = SHA-256(prev_hash + "\\n" + canonical JSON of the row)``, where the
canonical JSON has sorted keys, no insignificant whitespace and UTF-8 text. A unit of work only inserts its rows
into ``audit_pending``; the chainer (``chain_pending``, run by the worker's ``auditor``) locks the one-row
``audit_head`` and links committed pending rows in order, so the chain never forks and no request waits on it.
Chained rows are append-only (database triggers refuse UPDATE/DELETE).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import from_db, to_db
from penpay.adapters.db.multirow import insert_rows
from penpay.adapters.db.tables import audit_head, audit_log, audit_pending
from penpay_domain.events import TransactionEvent
from penpay_domain.ledger import Transfer
from penpay_domain.ports import ChainReport

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_body(*, seq: int, occurred_at: datetime, actor: str, action: str, subject: str, payload_json: str) -> str:
    """The canonical JSON of a chained row, byte for byte what :func:`canonical` makes of the dict of its six fields
    (keys sorted: action, actor, occurred_at, payload, seq, subject), written directly: the chainer hashes every audit
    row, and building and sorting a dict for each cost more than the hash itself."""
    if type(seq) is not int:  # a bool or another int subclass: json writes those its own way
        raise TypeError(f"seq must be an int, not {type(seq).__name__}")
    q = encode_basestring
    return (
        f'{{"action":{q(action)},"actor":{q(actor)},"occurred_at":{q(occurred_at.isoformat())},'
        f'"payload":{q(payload_json)},"seq":{seq},"subject":{q(subject)}}}'
    )


def chain_hash(
    prev_hash: str, *, seq: int, occurred_at: datetime, actor: str, action: str, subject: str, payload_json: str
) -> str:
    body = chain_body(
        seq=seq, occurred_at=occurred_at, actor=actor, action=action, subject=subject, payload_json=payload_json
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def transfer_entry(transfer: Transfer) -> tuple[str, str, dict[str, Any]]:
    """What the audit log says of an applied ledger transfer: (action, subject, payload)."""
    return (
        f"ledger.{transfer.kind.value}",
        transfer.id[:64],
        {
            "transaction_id": transfer.transaction_id,
            "pending_id": transfer.pending_id,
            "postings": [[p.debit, p.credit, p.amount.minor, p.amount.currency.value] for p in transfer.postings],
        },
    )


def event_entry(event: TransactionEvent) -> tuple[str, str, dict[str, Any]]:
    """What the audit log says of a transaction event: (action, subject, payload)."""
    return event.name, event.transaction_id, event.to_payload()


def pending_row(actor: str, entry: tuple[str, str, dict[str, Any]], now: datetime) -> dict[str, Any]:
    """One ``audit_pending`` row (the chainer links it into the chain after commit)."""
    action, subject, payload = entry
    return {
        "occurred_at": to_db(now),
        "actor": actor[:64],
        "action": action[:64],
        "subject": subject[:64],
        "payload": canonical(payload),
    }


def runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct ids as runs of consecutive integers: [1, 2, 3, 7, 9, 10] -> [(1, 3), (7, 7), (9, 10)]."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class SqlAuditLog:
    """Appends go to ``audit_pending`` inside the caller's transaction (no shared lock); ``chain_pending`` links
    committed pending rows into the chain, holding the ``audit_head`` lock only for that short transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._buffered: list[dict[str, Any]] = []

    async def append(self, *, actor: str, action: str, subject: str, payload: dict[str, Any], now: datetime) -> None:
        """Buffered: the row is inserted with the unit of work's own audit rows, in one statement right before its
        commit (``append_rows``), or by ``flush``. A unit of work that does not commit writes nothing, as before."""
        self._buffered.append(pending_row(actor, (action, subject, payload), now))

    async def append_many(
        self, *, actor: str, entries: Sequence[tuple[str, str, dict[str, Any]]], now: datetime
    ) -> None:
        self._buffered.extend(pending_row(actor, entry, now) for entry in entries)

    async def append_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """The buffered rows, then several ``pending_row``s, in one statement (in order: their ids keep it)."""
        pending, self._buffered = [*self._buffered, *rows], []
        if pending:
            await insert_rows(self._conn, audit_pending.name, pending)

    async def flush(self) -> None:
        """Insert the buffered rows now (still inside the caller's transaction)."""
        await self.append_rows([])

    async def chain_pending(self, limit: int = 1000) -> int:
        """Link up to ``limit`` committed pending rows, oldest first, into the hash chain; returns how many. Rows
        of transactions still open are invisible here and are chained by a later pass. The caller commits."""
        head = (await self._conn.execute(sa.select(audit_head).where(audit_head.c.id == 1).with_for_update())).one()
        pending = (await self._conn.execute(sa.select(audit_pending).order_by(audit_pending.c.id).limit(limit))).all()
        if not pending:
            return 0
        seq, prev = int(head.last_seq), str(head.last_hash)
        rows = []
        for p in pending:
            seq += 1
            digest = chain_hash(
                prev,
                seq=seq,
                occurred_at=from_db(p.occurred_at),
                actor=p.actor,
                action=p.action,
                subject=p.subject,
                payload_json=p.payload,
            )
            rows.append(
                {
                    "seq": seq,
                    "occurred_at": p.occurred_at,
                    "actor": p.actor,
                    "action": p.action,
                    "subject": p.subject,
                    "payload": p.payload,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
        await insert_rows(self._conn, audit_log.name, rows)
        await self._delete_chained(sorted(int(p.id) for p in pending))
        await self._conn.execute(audit_head.update().where(audit_head.c.id == 1).values(last_seq=seq, last_hash=prev))
        return len(rows)

    async def verify(self) -> ChainReport:
        return await verify_chain(self._conn)

    async def _delete_chained(self, ids: Sequence[int]) -> None:
        """Delete the pending rows just chained without waiting on rows that open transactions are inserting.

        A scan that reaches a row another transaction has inserted but not committed waits for that transaction.
        So no statement here may read past the rows it deletes: not an ``IN`` list (over this small table MariaDB
        scans it all), and not a range ending at the last row chained (a range scan reads the next row to find its
        end, and that may be one still being inserted). Each run of consecutive ids ``a..b`` is deleted as the
        range ``a <= id < b``, whose scan stops at ``b``, a committed row no one else locks, and then ``b`` alone by
        its key. Only the ids of a run are in its range, so a row committed later is never deleted unchained."""
        pk = audit_pending.c.id
        ranges, ends = [], []
        for first, last in runs(ids):
            if last > first:
                ranges.append({"first": first, "last": last})
            ends.append({"pending_id": last})
        if ranges:
            await self._conn.execute(
                audit_pending.delete().where(pk >= sa.bindparam("first"), pk < sa.bindparam("last")), ranges
            )
        await self._conn.execute(audit_pending.delete().where(pk == sa.bindparam("pending_id")), ends)


async def _rows(conn: AsyncConnection, batch: int, upto: int | None) -> AsyncIterator[sa.Row[tuple[object, ...]]]:
    last = 0
    while True:
        stmt = sa.select(audit_log).where(audit_log.c.seq > last)
        if upto is not None:
            stmt = stmt.where(audit_log.c.seq <= upto)
        rows = (await conn.execute(stmt.order_by(audit_log.c.seq).limit(batch))).all()
        if not rows:
            return
        for row in rows:
            yield row
        last = int(rows[-1].seq)


async def verify_chain(conn: AsyncConnection, *, batch: int = 5000) -> ChainReport:
    """Re-walk the chain from the genesis hash; name the first row whose link or hash is wrong.

    The head is read first and the walk stops at its row: the chainer links rows while this runs, and rows chained
    after the head was read are the next verification's. The chainer writes rows and head in one transaction, so
    every row up to the head read here is committed."""
    head = (await conn.execute(sa.select(audit_head).where(audit_head.c.id == 1))).first()
    upto = int(head.last_seq) if head is not None else None
    prev, expected_seq, count = GENESIS, 1, 0
    async for row in _rows(conn, batch, upto):
        seq = int(row.seq)
        if seq != expected_seq:
            return ChainReport(
                ok=False,
                rows=count,
                first_bad_row=expected_seq,
                reason=f"row {expected_seq} is missing (next is {seq})",
            )
        if row.prev_hash != prev:
            return ChainReport(
                ok=False, rows=count, first_bad_row=seq, reason="prev_hash does not match the previous row's hash"
            )
        digest = chain_hash(
            prev,
            seq=seq,
            occurred_at=from_db(row.occurred_at),
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            payload_json=row.payload,
        )
        if digest != row.hash:
            return ChainReport(ok=False, rows=count, first_bad_row=seq, reason="hash does not match the row's contents")
        prev, expected_seq, count = digest, seq + 1, count + 1
    if head is not None and (int(head.last_seq) != count or head.last_hash != prev):
        return ChainReport(
            ok=False, rows=count, first_bad_row=count + 1, reason="the chain's head does not match its last row"
        )
    return ChainReport(ok=True, rows=count, first_bad_row=None, reason=None)
