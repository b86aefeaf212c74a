"""An index on ``processed_messages.processed_at``, so the housekeeping pass can delete old records by age.

The worker records every stream message it processed (its deduplication) and nothing ever removed them: the table
grew by a few rows per transaction, for good. The housekeeping pass (``service_layer.housekeeping``) now deletes
records older than ``PENPAY_DEDUPE_RETENTION_DAYS`` a chunk at a time; without an index on their age each chunk
would scan the whole table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_processed_messages_processed_at"


def upgrade() -> None:
    op.create_index(INDEX, "processed_messages", ["processed_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="processed_messages")
