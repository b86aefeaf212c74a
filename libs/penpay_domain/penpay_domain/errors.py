"""The domain's errors. Each carries a stable ``code``; the API maps code -> HTTP status in one table.

No HTTP, database or provider vocabulary lives here: an error says what rule was broken, not how to report it.
"""

from __future__ import annotations


class DomainError(Exception):
    """A business rule was broken. ``code`` is stable (clients and tests depend on it)."""

    code = "domain_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    code = "invalid_input"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"


class InvalidMsisdn(InvalidInput):
    code = "invalid_msisdn"


class InvalidLoginId(InvalidInput):
    code = "invalid_deriv_loginid"


class QuoteExpired(DomainError):
    code = "fx_quote_expired"


class IllegalTransition(DomainError):
    code = "illegal_transition"


class LimitExceeded(DomainError):
    code = "limit_exceeded"


class AmountOutOfRange(InvalidAmount):
    code = "amount_out_of_range"


class UnbalancedTransfer(DomainError):
    code = "ledger_unbalanced"


class InsufficientFunds(DomainError):
    """A posting would break an account's balance rule (e.g. the Deriv agent balance would go below zero)."""

    code = "insufficient_funds"


class PendingTransferResolved(DomainError):
    """A pending transfer was already posted or voided; it can be resolved exactly once."""

    code = "pending_transfer_resolved"


class NotFound(DomainError):
    code = "not_found"


class ConcurrencyConflict(DomainError):
    """Someone else changed the aggregate first (optimistic version check failed)."""

    code = "concurrency_conflict"
