"""Ledger entries lose their foreign key to ``ledger_accounts``.

The shared accounts (the Deriv float, the M-Pesa and FX accounts) are in every transaction, so their row locks must be
held as briefly as possible: the counters are now written by one relative ``UPDATE`` as the last statement before
``COMMIT``. Inserting an entry checked its foreign key with a shared lock on the account's row, which then had to be
upgraded by that ``UPDATE`` — two writers holding the shared lock deadlock — so the entries had to wait until after
the update, keeping the rows locked for another round trip. Without the key an entry insert takes no lock on the
account. What the key guaranteed still holds in the same transaction: the ``UPDATE`` names every account the entries
touch and the ledger refuses the whole transaction unless it matched each of them (``adapters.db.ledger``), and
accounts are never deleted. The key to ``ledger_transfers`` stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_ledger_entries_account_code_ledger_accounts"


def upgrade() -> None:
    op.drop_constraint(FK, "ledger_entries", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(FK, "ledger_entries", "ledger_accounts", ["account_code"], ["code"])
