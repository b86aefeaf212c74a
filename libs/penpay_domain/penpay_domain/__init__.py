"""PenPay's domain: pure Python, no I/O. Money, FX, transactions, the double-entry ledger, policies and ports."""
