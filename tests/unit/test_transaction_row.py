"""A ``transactions`` row and its aggregate (``adapters.db.repositories``): the row read back by position gives the
aggregate it was written from, every column in its place (each optional column holds a value of its own here, so a
swapped pair would show)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from penpay.adapters.db.engine import to_db
from penpay.adapters.db.repositories import _COLUMNS, _transaction, transaction_row
from penpay.adapters.db.tables import transactions
from penpay_domain.ids import PayoutId
from penpay_domain.transaction import Transaction
from tests.unit.domain_builders import NOW, a_deposit, a_withdrawal


def _as_read(txn: Transaction) -> tuple[Any, ...]:
    """The row as the driver hands it back: the columns in the table's order, datetimes naive (UTC)."""
    row = transaction_row(txn)
    return tuple(row[c] for c in _COLUMNS)


def _filled(txn: Transaction) -> Transaction:
    txn.mpesa_checkout_request_id = "ws_CO_1"
    txn.mpesa_receipt = "SRECEIPT1"
    txn.payout_id = PayoutId("P-payout")
    txn.refund_payout_id = PayoutId("P-refund")
    txn.b2c_conversation_id = "AG_conv"
    txn.b2c_receipt = "SB2C1"
    txn.deriv_transaction_id = "1001"
    txn.reversal_deriv_transaction_id = "1002"
    txn.failure_code = "code"
    txn.failure_reason = "reason"
    txn.review_reason = "review"
    txn.stk_requested_at = NOW + timedelta(seconds=3)
    txn.updated_at = NOW + timedelta(seconds=9)
    return txn


def test_the_table_has_the_columns_in_the_order_the_aggregate_unpacks_them() -> None:
    assert [c.name for c in transactions.columns] == [
        "id",
        "kind",
        "status",
        "user_id",
        "msisdn",
        "deriv_loginid",
        "amount_kes",
        "amount_usd",
        "fee_kes",
        "quote_id",
        "fx_mid",
        "fx_spread_bps",
        "fx_rate",
        "quote_issued_at",
        "quote_expires_at",
        "mpesa_checkout_request_id",
        "mpesa_receipt",
        "payout_id",
        "refund_payout_id",
        "b2c_conversation_id",
        "b2c_receipt",
        "deriv_transaction_id",
        "reversal_deriv_transaction_id",
        "failure_code",
        "failure_reason",
        "review_reason",
        "stk_requested_at",
        "legs",
        "version",
        "created_at",
        "updated_at",
    ]


def test_a_row_read_back_is_the_aggregate_it_was_written_from() -> None:
    for txn in (a_deposit(), a_withdrawal(), _filled(a_deposit()), _filled(a_withdrawal())):
        loaded = _transaction(_as_read(txn))
        assert transaction_row(loaded) == transaction_row(txn)
        assert loaded.updated_at == txn.updated_at and to_db(loaded.created_at) == to_db(txn.created_at)
