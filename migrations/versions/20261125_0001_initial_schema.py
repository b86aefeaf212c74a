"""Initial schema: transactions, the double-entry ledger, idempotency, outbox, processed messages, the
hash-chained audit log, linked Deriv accounts and raw M-Pesa callbacks. Append-only tables get triggers that
refuse UPDATE and DELETE, so history cannot be rewritten even by hand.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 04:19:51.938692
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME6 = mysql.DATETIME(fsp=6)
APPEND_ONLY = ("ledger_transfers", "ledger_entries", "audit_log", "mpesa_callbacks")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", DATETIME6, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_audit_log_subject", "audit_log", ["subject", "seq"], unique=False)
    op.create_table(
        "deriv_accounts",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("loginid", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("token_ciphertext", sa.LargeBinary(length=4096), nullable=False),
        sa.Column("linked_at", DATETIME6, nullable=False),
        sa.Column("updated_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "loginid"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("idem_key", sa.String(length=255, collation="ascii_bin"), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(length=16777216), nullable=True),
        sa.Column("transaction_id", sa.String(length=26), nullable=True),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "idem_key"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"], unique=False)
    op.create_table(
        "ledger_accounts",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", DATETIME6, nullable=False),
        sa.CheckConstraint(
            "rule <> 'credits_must_not_exceed_debits' OR credits_pending + credits_posted <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_within_debits"),
        ),
        sa.CheckConstraint(
            "rule <> 'debits_must_not_exceed_credits' OR debits_pending + debits_posted <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_within_credits"),
        ),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
            name=op.f("ck_ledger_accounts_non_negative_counters"),
        ),
        sa.PrimaryKeyConstraint("code"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pending_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=26), nullable=True),
        sa.Column("memo", sa.String(length=64), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_transfers_id")),
        sa.UniqueConstraint("pending_id", name=op.f("uq_ledger_transfers_pending_id")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index(op.f("ix_ledger_transfers_transaction_id"), "ledger_transfers", ["transaction_id"], unique=False)
    op.create_table(
        "mpesa_callbacks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=26), nullable=True),
        sa.Column("source_ip", sa.String(length=45), nullable=False),
        sa.Column("token_valid", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index(op.f("ix_mpesa_callbacks_transaction_id"), "mpesa_callbacks", ["transaction_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=26), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.Column("published_at", DATETIME6, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"], unique=False)
    op.create_table(
        "processed_messages",
        sa.Column("consumer_group", sa.String(length=64), nullable=False),
        sa.Column("message_key", sa.String(length=128), nullable=False),
        sa.Column("processed_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "message_key"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("msisdn", sa.String(length=12), nullable=False),
        sa.Column("deriv_loginid", sa.String(length=20), nullable=False),
        sa.Column("amount_kes", sa.BigInteger(), nullable=False),
        sa.Column("amount_usd", sa.BigInteger(), nullable=False),
        sa.Column("fee_kes", sa.BigInteger(), nullable=False),
        sa.Column("quote_id", sa.String(length=32), nullable=False),
        sa.Column("fx_mid", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("fx_spread_bps", sa.Integer(), nullable=False),
        sa.Column("fx_rate", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("quote_issued_at", DATETIME6, nullable=False),
        sa.Column("quote_expires_at", DATETIME6, nullable=False),
        sa.Column("mpesa_checkout_request_id", sa.String(length=64), nullable=True),
        sa.Column("mpesa_receipt", sa.String(length=32), nullable=True),
        sa.Column("payout_id", sa.String(length=20), nullable=True),
        sa.Column("refund_payout_id", sa.String(length=20), nullable=True),
        sa.Column("b2c_conversation_id", sa.String(length=64), nullable=True),
        sa.Column("b2c_receipt", sa.String(length=32), nullable=True),
        sa.Column("deriv_transaction_id", sa.String(length=32), nullable=True),
        sa.Column("reversal_deriv_transaction_id", sa.String(length=32), nullable=True),
        sa.Column("failure_code", sa.String(length=32), nullable=True),
        sa.Column("failure_reason", sa.String(length=255), nullable=True),
        sa.Column("review_reason", sa.String(length=255), nullable=True),
        sa.Column("legs", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.Column("updated_at", DATETIME6, nullable=False),
        sa.CheckConstraint(
            "amount_kes > 0 AND amount_usd > 0 AND fee_kes >= 0", name=op.f("ck_transactions_positive_amounts")
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("b2c_conversation_id", name=op.f("uq_transactions_b2c_conversation_id")),
        sa.UniqueConstraint("b2c_receipt", name=op.f("uq_transactions_b2c_receipt")),
        sa.UniqueConstraint("mpesa_checkout_request_id", name=op.f("uq_transactions_mpesa_checkout_request_id")),
        sa.UniqueConstraint("mpesa_receipt", name=op.f("uq_transactions_mpesa_receipt")),
        sa.UniqueConstraint("payout_id", name=op.f("uq_transactions_payout_id")),
        sa.UniqueConstraint("refund_payout_id", name=op.f("uq_transactions_refund_payout_id")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_transactions_status_updated", "transactions", ["status", "updated_at"], unique=False)
    op.create_index("ix_transactions_user_created", "transactions", ["user_id", "created_at"], unique=False)
    op.create_index("ix_transactions_user_id_id", "transactions", ["user_id", "id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("posting", sa.SmallInteger(), nullable=False),
        sa.Column("account_code", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=1), nullable=False),
        sa.Column("transfer_kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.CheckConstraint("direction IN ('D', 'C')", name=op.f("ck_ledger_entries_direction")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_entries_positive_amount")),
        sa.ForeignKeyConstraint(
            ["account_code"], ["ledger_accounts.code"], name=op.f("fk_ledger_entries_account_code_ledger_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["ledger_transfers.id"], name=op.f("fk_ledger_entries_transfer_id_ledger_transfers")
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("transfer_id", "posting", "direction", name="uq_ledger_entries_leg"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account_code", "seq"], unique=False)
    op.create_index(op.f("ix_ledger_entries_transfer_id"), "ledger_entries", ["transfer_id"], unique=False)

    op.execute(sa.text("INSERT INTO audit_head (id, last_seq, last_hash) VALUES (1, 0, REPEAT('0', 64))"))
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                sa.text(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} FOR EACH ROW "
                    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} is append-only: {verb} is not allowed'"
                )
            )


def downgrade() -> None:
    for table in APPEND_ONLY:
        for verb in ("update", "delete"):
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
    op.drop_table("ledger_entries")
    op.drop_table("transactions")
    op.drop_table("processed_messages")
    op.drop_table("outbox")
    op.drop_table("mpesa_callbacks")
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
    op.drop_table("idempotency_keys")
    op.drop_table("deriv_accounts")
    op.drop_table("audit_log")
    op.drop_table("audit_head")
