"""The hash-chained audit log (ARCHITECTURE §9).

Each row stores ``prev_hash`` and ``hash = SHA-256(prev_hash + "\\n" + canonical JSON of the row)``, where the
canonical JSON has sorted keys, no insignificant whitespace and UTF-8 text. A unit of work only inserts its entries
into ``audit_pending``, one row for all of them (``pending_row``); the chainer (``chain_pending``, run by the
worker's ``auditor``) locks the one-row ``audit_head`` and links the entries of committed pending rows in order,
one ``audit_log`` row each, so the chain never forks and no request waits on it. Chained rows are append-only
(database triggers refuse UPDATE/DELETE).
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


Entry = tuple[str, str, dict[str, Any]]  # action, subject, payload
CHAIN_INSERT_ROWS = 1000  # audit_log rows per INSERT statement of a pass


def pending_row(now: datetime, entries: Sequence[tuple[str, Entry]]) -> dict[str, Any]:
    """One ``audit_pending`` row for several ``(actor, entry)`` of one moment, in order: ``entries`` is the JSON
    array of ``[actor, action, subject, payload]``, each payload already its canonical JSON text, so the chainer
    hashes the very text written here. A unit of work writes one such row, not one row per entry: the chainer
    writes each entry's own ``audit_log`` row, and the rows written to ``audit_pending`` and deleted from it again
    were two thirds of the audit trail's cost to MariaDB (docs/performance.md, round 10)."""
    return {
        "occurred_at": to_db(now),
        "entry_count": len(entries),
        "entries": json.dumps(
            [
                [actor[:64], action[:64], subject[:64], canonical(payload)]
                for actor, (action, subject, payload) in entries
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        ),
    }


def pending_rows(buffered: Sequence[tuple[datetime, str, Entry]]) -> list[dict[str, Any]]:
    """``(moment, actor, entry)`` in order as :func:`pending_row` rows: one for each run of entries of one moment
    (a unit of work's entries share its ``now``: one row)."""
    rows: list[dict[str, Any]] = []
    start = 0
    for i in range(1, len(buffered) + 1):
        if i == len(buffered) or buffered[i][0] != buffered[start][0]:
            rows.append(pending_row(buffered[start][0], [(actor, entry) for _, actor, entry in buffered[start:i]]))
            start = i
    return rows


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
    committed pending entries into the chain, holding the ``audit_head`` lock only for that short transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._buffered: list[tuple[datetime, str, Entry]] = []

    async def append(self, *, actor: str, action: str, subject: str, payload: dict[str, Any], now: datetime) -> None:
        """Buffered: the entry is inserted with the unit of work's other entries, in one row right before its
        commit (``flush``). A unit of work that does not commit writes nothing, as before."""
        self._buffered.append((now, actor, (action, subject, payload)))

    async def append_many(self, *, actor: str, entries: Sequence[Entry], now: datetime) -> None:
        self._buffered.extend((now, actor, entry) for entry in entries)

    async def flush(self) -> None:
        """Insert the buffered entries now (still inside the caller's transaction): one row, in order."""
        buffered, self._buffered = self._buffered, []
        if buffered:
            await insert_rows(self._conn, audit_pending.name, pending_rows(buffered))

    async def chain_pending(self, limit: int = 1000) -> int:
        """Link the entries of committed pending rows, oldest first, into the hash chain: whole rows, about
        ``limit`` entries (at least one row, and then rows until ``limit`` is reached); returns how many entries.
        Rows of transactions still open are invisible here and are chained by a later pass. The caller commits."""
        head = (await self._conn.execute(sa.select(audit_head).where(audit_head.c.id == 1).with_for_update())).one()
        pk = audit_pending.c.id
        sizes = (await self._conn.execute(sa.select(pk, audit_pending.c.entry_count).order_by(pk).limit(limit))).all()
        if not sizes:
            return 0
        upto, taken = sizes[-1].id, 0
        for row in sizes:
            taken += int(row.entry_count)
            if taken >= limit:
                upto = row.id
                break
        # rows committed since the first read between the same ids are chained too: committed is all it takes
        pending = (
            await self._conn.execute(
                sa.select(pk, audit_pending.c.occurred_at, audit_pending.c.entries)
                .where(pk >= sizes[0].id, pk <= upto)
                .order_by(pk)
            )
        ).all()
        seq, prev = int(head.last_seq), str(head.last_hash)
        rows = []
        for p in pending:
            occurred_at = from_db(p.occurred_at)
            for actor, action, subject, payload in json.loads(p.entries):
                seq += 1
                digest = chain_hash(
                    prev,
                    seq=seq,
                    occurred_at=occurred_at,
                    actor=actor,
                    action=action,
                    subject=subject,
                    payload_json=payload,
                )
                rows.append(
                    {
                        "seq": seq,
                        "occurred_at": p.occurred_at,
                        "actor": actor,
                        "action": action,
                        "subject": subject,
                        "payload": payload,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                prev = digest
        for start in range(0, len(rows), CHAIN_INSERT_ROWS):
            await insert_rows(self._conn, audit_log.name, rows[start : start + CHAIN_INSERT_ROWS])
        await self._delete_chained([int(p.id) for p in pending])
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
