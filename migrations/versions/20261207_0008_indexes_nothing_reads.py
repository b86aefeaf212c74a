"""Drop two secondary indexes that no query reads and every insert paid for.

- ``uq_audit_log_hash``: a unique index on each ``audit_log`` row's SHA-256. Nothing looks a row up by its hash
  (``penpay audit verify`` walks the chain by ``seq``), and the chain itself is what makes the log tamper-evident:
  each hash covers the previous one and the row's ``seq``, whose primary key already refuses a second row at the
  same place. The index cost ~2 µs of MariaDB's CPU per row (11 rows a deposit; docs/performance.md, round 15),
  and, its keys being random, it grows into random page reads once the log outgrows the buffer pool: each insert's
  uniqueness check reads a leaf somewhere in an index as large as the log.
- ``ix_ledger_entries_transfer_id``: ``uq_ledger_entries_leg`` (``transfer_id, posting, direction``) begins with
  the same column, so it serves every lookup by transfer and the foreign key to ``ledger_transfers``; the second
  index was written for each of a deposit's eight entries and never read instead.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_audit_log_hash", "audit_log", type_="unique")
    op.drop_index("ix_ledger_entries_transfer_id", table_name="ledger_entries")


def downgrade() -> None:
    op.create_index("ix_ledger_entries_transfer_id", "ledger_entries", ["transfer_id"], unique=False)
    op.create_unique_constraint("uq_audit_log_hash", "audit_log", ["hash"])
