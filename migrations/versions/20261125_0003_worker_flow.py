"""Worker flow: when an STK push was sent (so a push whose outcome is unknown is never sent twice), and the e-mail
of a linked Deriv account (where notifications go).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("transactions", sa.Column("stk_requested_at", mysql.DATETIME(fsp=6), nullable=True))
    op.add_column("deriv_accounts", sa.Column("email", sa.String(254), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("deriv_accounts", "email")
    op.drop_column("transactions", "stk_requested_at")
