"""The hash-chained audit log (ARCHITECTURE §9).

Each row stores ``prev_hash`` and ``hash = SHA-256(prev_hash + "\\n" + canonical JSON of the row)``, where the
canonical JSON has sorted keys, no insignificant whitespace and UTF-8 text. Appends lock the one-row ``audit_head``
so concurrent writers extend a single chain; rows are append-only (database triggers refuse UPDATE/DELETE).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from penpay.adapters.db.engine import from_db, to_db
from penpay.adapters.db.tables import audit_head, audit_log
from penpay_domain.ports import AuditEntry, ChainReport

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(
    prev_hash: str, *, seq: int, occurred_at: datetime, actor: str, action: str, subject: str, payload_json: str
) -> str:
    body = canonical(
        {
            "seq": seq,
            "occurred_at": occurred_at.isoformat(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "payload": payload_json,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(
        self, *, actor: str, action: str, subject: str, payload: dict[str, Any], now: datetime
    ) -> AuditEntry:
        head = (await self._conn.execute(sa.select(audit_head).where(audit_head.c.id == 1).with_for_update())).one()
        seq = int(head.last_seq) + 1
        stamp = from_db(to_db(now))  # exactly what DATETIME(6) stores, so verification recomputes the same hash
        payload_json = canonical(payload)
        digest = chain_hash(
            str(head.last_hash),
            seq=seq,
            occurred_at=stamp,
            actor=actor,
            action=action,
            subject=subject,
            payload_json=payload_json,
        )
        await self._conn.execute(
            audit_log.insert().values(
                seq=seq,
                occurred_at=to_db(stamp),
                actor=actor[:64],
                action=action[:64],
                subject=subject[:64],
                payload=payload_json,
                prev_hash=head.last_hash,
                hash=digest,
            )
        )
        await self._conn.execute(audit_head.update().where(audit_head.c.id == 1).values(last_seq=seq, last_hash=digest))
        return AuditEntry(
            seq=seq,
            occurred_at=stamp,
            actor=actor,
            action=action,
            subject=subject,
            payload=payload,
            prev_hash=str(head.last_hash),
            hash=digest,
        )

    async def verify(self) -> ChainReport:
        return await verify_chain(self._conn)


async def _rows(conn: AsyncConnection, batch: int) -> AsyncIterator[sa.Row[tuple[object, ...]]]:
    last = 0
    while True:
        rows = (
            await conn.execute(
                sa.select(audit_log).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(batch)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        last = int(rows[-1].seq)


async def verify_chain(conn: AsyncConnection, *, batch: int = 5000) -> ChainReport:
    """Re-walk the chain from the genesis hash; name the first row whose link or hash is wrong."""
    prev, expected_seq, count = GENESIS, 1, 0
    async for row in _rows(conn, batch):
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
    head = (await conn.execute(sa.select(audit_head).where(audit_head.c.id == 1))).first()
    if head is not None and (int(head.last_seq) != count or head.last_hash != prev):
        return ChainReport(
            ok=False, rows=count, first_bad_row=count + 1, reason="the chain's head does not match its last row"
        )
    return ChainReport(ok=True, rows=count, first_bad_row=None, reason=None)
