"""API intake: a per-user row that serialises limit checks, single-use withdrawal verification codes, and the
source-IP verdict of each stored M-Pesa callback.

- ``user_limits``: one row per user. A deposit or withdrawal locks it (``INSERT … ON DUPLICATE KEY UPDATE`` takes
  the row's exclusive lock at once) before reading the day's volume, inside the transaction that inserts the new
  transaction, so parallel requests of one user cannot together exceed the daily limit.
- ``withdrawal_codes``: the Deriv e-mail verification code of a withdrawal, encrypted (Fernet), until the worker
  uses it once and deletes it.
- ``mpesa_callbacks.source_allowed``: whether the sender's address was on the allowlist (``token_valid`` keeps
  meaning the URL token alone).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME6 = mysql.DATETIME(fsp=6)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_limits",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("locked_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "withdrawal_codes",
        sa.Column("transaction_id", sa.String(length=26), nullable=False),
        sa.Column("code_ciphertext", sa.LargeBinary(length=1024), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("transaction_id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.add_column(
        "mpesa_callbacks",
        sa.Column("source_allowed", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    op.drop_column("mpesa_callbacks", "source_allowed")
    op.drop_table("withdrawal_codes")
    op.drop_table("user_limits")
