"""SQLAlchemy Core tables: the schema Alembic migrates to and the repositories query.

Money is BIGINT minor units next to its currency; rates are DECIMAL(18,6); times are UTC DATETIME(6).
Append-only tables (ledger transfers and entries, audit log) are also guarded by triggers (see the migration).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)


def _table(name: str, *items: sa.schema.SchemaItem) -> sa.Table:
    return sa.Table(name, metadata, *items, mysql_engine="InnoDB", mysql_charset="utf8mb4", mysql_collate="utf8mb4_bin")


UTC_DATETIME = sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    """A UTC timestamp with microseconds (stored naive; the repositories attach/strip UTC)."""
    return sa.Column(name, UTC_DATETIME, nullable=nullable)


def _money(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


transactions = _table(
    "transactions",
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("msisdn", sa.String(12), nullable=False),
    sa.Column("deriv_loginid", sa.String(20), nullable=False),
    _money("amount_kes"),
    _money("amount_usd"),
    _money("fee_kes"),
    sa.Column("quote_id", sa.String(32), nullable=False),
    sa.Column("fx_mid", sa.Numeric(18, 6), nullable=False),
    sa.Column("fx_spread_bps", sa.Integer, nullable=False),
    sa.Column("fx_rate", sa.Numeric(18, 6), nullable=False),
    _ts("quote_issued_at"),
    _ts("quote_expires_at"),
    sa.Column("mpesa_checkout_request_id", sa.String(64), nullable=True, unique=True),
    sa.Column("mpesa_receipt", sa.String(32), nullable=True, unique=True),
    sa.Column("payout_id", sa.String(20), nullable=True, unique=True),
    sa.Column("refund_payout_id", sa.String(20), nullable=True, unique=True),
    sa.Column("b2c_conversation_id", sa.String(64), nullable=True, unique=True),
    sa.Column("b2c_receipt", sa.String(32), nullable=True, unique=True),
    sa.Column("deriv_transaction_id", sa.String(32), nullable=True),
    sa.Column("reversal_deriv_transaction_id", sa.String(32), nullable=True),
    sa.Column("failure_code", sa.String(32), nullable=True),
    sa.Column("failure_reason", sa.String(255), nullable=True),
    sa.Column("review_reason", sa.String(255), nullable=True),
    _ts("stk_requested_at", nullable=True),
    sa.Column("legs", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.CheckConstraint("amount_kes > 0 AND amount_usd > 0 AND fee_kes >= 0", name="positive_amounts"),
    sa.Index("ix_transactions_user_created", "user_id", "created_at"),
    sa.Index("ix_transactions_user_id_id", "user_id", "id"),
    sa.Index("ix_transactions_status_updated", "status", "updated_at"),
)

ledger_accounts = _table(
    "ledger_accounts",
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("rule", sa.String(40), nullable=False),
    _money("debits_pending"),
    _money("debits_posted"),
    _money("credits_pending"),
    _money("credits_posted"),
    _ts("updated_at"),
    sa.CheckConstraint(
        "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
        name="non_negative_counters",
    ),
    sa.CheckConstraint(
        "rule <> 'credits_must_not_exceed_debits' OR credits_pending + credits_posted <= debits_posted",
        name="credits_within_debits",
    ),
    sa.CheckConstraint(
        "rule <> 'debits_must_not_exceed_credits' OR debits_pending + debits_posted <= credits_posted",
        name="debits_within_credits",
    ),
)

ledger_transfers = _table(
    "ledger_transfers",
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("pending_id", sa.String(64), nullable=True, unique=True),
    sa.Column("transaction_id", sa.String(26), nullable=True, index=True),
    sa.Column("memo", sa.String(64), nullable=False),
    _ts("created_at"),
)

ledger_entries = _table(
    "ledger_entries",
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
    # looked up by uq_ledger_entries_leg, which begins with it (migration 0008)
    sa.Column("transfer_id", sa.String(64), sa.ForeignKey("ledger_transfers.id"), nullable=False),
    sa.Column("posting", sa.SmallInteger, nullable=False),
    # no foreign key to ledger_accounts (migration 0005): the counters' UPDATE checks every account in the same txn
    sa.Column("account_code", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(1), nullable=False),
    sa.Column("transfer_kind", sa.String(16), nullable=False),
    _money("amount"),
    sa.Column("currency", sa.String(3), nullable=False),
    _ts("created_at"),
    sa.CheckConstraint("amount > 0", name="positive_amount"),
    sa.CheckConstraint("direction IN ('D', 'C')", name="direction"),
    sa.UniqueConstraint("transfer_id", "posting", "direction", name="uq_ledger_entries_leg"),
    sa.Index("ix_ledger_entries_account", "account_code", "seq"),
)

idempotency_keys = _table(
    "idempotency_keys",
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("idem_key", sa.String(255, collation="ascii_bin"), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.SmallInteger, nullable=True),
    sa.Column("response_body", sa.LargeBinary(16 * 1024 * 1024), nullable=True),
    sa.Column("transaction_id", sa.String(26), nullable=True),
    _ts("created_at"),
    sa.Index("ix_idempotency_keys_created", "created_at"),
)

outbox = _table(
    "outbox",
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("transaction_id", sa.String(26), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    _ts("created_at"),
    _ts("published_at", nullable=True),
    sa.Index("ix_outbox_unpublished", "published_at", "id"),
)

processed_messages = _table(
    "processed_messages",
    sa.Column("consumer_group", sa.String(64), primary_key=True),
    sa.Column("message_key", sa.String(128), primary_key=True),
    _ts("processed_at"),
    sa.Index("ix_processed_messages_processed_at", "processed_at"),
)

audit_log = _table(
    "audit_log",
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    _ts("occurred_at"),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),  # read by walking the chain, never looked up (0008)
    sa.Index("ix_audit_log_subject", "subject", "seq"),
)

# The chain's head: one row, locked by each append so the chain never forks under concurrency.
audit_head = _table(
    "audit_head",
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

# Audit entries written by units of work, waiting for the chainer to link them into ``audit_log`` (migration 0004):
# one row per unit of work, ``entries`` the JSON array of its ``[actor, action, subject, payload]`` (migration 0007).
audit_pending = _table(
    "audit_pending",
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    _ts("occurred_at"),
    sa.Column("entry_count", sa.Integer, nullable=False),
    sa.Column("entries", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
)

deriv_accounts = _table(
    "deriv_accounts",
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("loginid", sa.String(20), primary_key=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("token_ciphertext", sa.LargeBinary(4096), nullable=False),
    sa.Column("email", sa.String(254), nullable=False, server_default=""),
    _ts("linked_at"),
    _ts("updated_at"),
)

mpesa_callbacks = _table(
    "mpesa_callbacks",
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("transaction_id", sa.String(26), nullable=True, index=True),
    sa.Column("source_ip", sa.String(45), nullable=False),
    sa.Column("token_valid", sa.Boolean, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    _ts("received_at"),
    sa.Column("source_allowed", sa.Boolean, nullable=False, server_default=sa.true()),  # migration 0002
)

# Migration 0002: a row per user, locked to serialise limit checks; single-use withdrawal codes (encrypted).
user_limits = _table(
    "user_limits",
    sa.Column("user_id", sa.String(64), primary_key=True),
    _ts("locked_at"),
)

withdrawal_codes = _table(
    "withdrawal_codes",
    sa.Column("transaction_id", sa.String(26), primary_key=True),
    sa.Column("code_ciphertext", sa.LargeBinary(1024), nullable=False),
    _ts("created_at"),
)

APPEND_ONLY_TABLES = ("ledger_transfers", "ledger_entries", "audit_log", "mpesa_callbacks")
