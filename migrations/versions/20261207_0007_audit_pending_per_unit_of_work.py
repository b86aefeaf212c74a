"""One ``audit_pending`` row per unit of work instead of one per audit entry.

A unit of work's audit entries (its events, ledger transfers, callbacks, admin actions) now wait for the chainer as
one row: ``entries`` is the JSON array of ``[actor, action, subject, payload]``, in the order they were appended,
and ``entry_count`` says how many (so the chainer can take about a thousand entries a pass without reading them).
The chainer still writes one ``audit_log`` row per entry, hashed exactly as before, so the chain, ``penpay audit
verify`` and every query of ``audit_log`` are unchanged; what changes is the number of rows written to and deleted
from ``audit_pending``: a batch of 64 deposits wrote 192 pending rows and now writes one (docs/performance.md,
round 10).

Rows pending at the upgrade become one-entry rows; the downgrade splits every row back into one row per entry, in
order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = (
    "CREATE TRIGGER audit_pending_no_update BEFORE UPDATE ON audit_pending FOR EACH ROW "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_pending rows are never changed, only chained'"
)
ENTRY_COLUMNS = ("actor", "action", "subject", "payload")


def _entries(rows: Sequence[Sequence[str]]) -> str:
    # as ``adapters.db.audit.pending_row`` writes them
    return json.dumps([list(r) for r in rows], ensure_ascii=False, separators=(",", ":"))


def upgrade() -> None:
    bind = op.get_bind()
    op.execute(sa.text("DROP TRIGGER IF EXISTS audit_pending_no_update"))
    op.add_column("audit_pending", sa.Column("entry_count", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("audit_pending", sa.Column("entries", mysql.LONGTEXT(), nullable=True))
    update = sa.text("UPDATE audit_pending SET entries = :entries WHERE id = :id")
    for row in bind.execute(sa.text("SELECT id, actor, action, subject, payload FROM audit_pending ORDER BY id")):
        bind.execute(update, {"id": row.id, "entries": _entries([(row.actor, row.action, row.subject, row.payload)])})
    for column in ENTRY_COLUMNS:
        op.drop_column("audit_pending", column)
    op.alter_column("audit_pending", "entries", existing_type=mysql.LONGTEXT(), nullable=False)
    op.alter_column("audit_pending", "entry_count", existing_type=sa.Integer(), server_default=None)
    op.execute(sa.text(TRIGGER))


def downgrade() -> None:
    bind = op.get_bind()
    op.execute(sa.text("DROP TRIGGER IF EXISTS audit_pending_no_update"))
    pending = bind.execute(sa.text("SELECT occurred_at, entries FROM audit_pending ORDER BY id")).all()
    bind.execute(sa.text("DELETE FROM audit_pending"))
    op.add_column("audit_pending", sa.Column("actor", sa.String(length=64), nullable=False))
    op.add_column("audit_pending", sa.Column("action", sa.String(length=64), nullable=False))
    op.add_column("audit_pending", sa.Column("subject", sa.String(length=64), nullable=False))
    op.add_column("audit_pending", sa.Column("payload", sa.Text(), nullable=False))
    op.drop_column("audit_pending", "entries")
    op.drop_column("audit_pending", "entry_count")
    insert = sa.text(
        "INSERT INTO audit_pending (occurred_at, actor, action, subject, payload) "
        "VALUES (:occurred_at, :actor, :action, :subject, :payload)"
    )
    for row in pending:
        for entry in json.loads(row.entries):
            bind.execute(insert, {"occurred_at": row.occurred_at, **dict(zip(ENTRY_COLUMNS, entry, strict=True))})
    op.execute(sa.text(TRIGGER))
