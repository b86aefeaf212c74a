"""PenPay's Daraja (Safaricom M-Pesa) client: see :mod:`penpay.adapters.daraja.client`.

``DarajaClient`` makes the calls; ``parse_*`` read Daraja's asynchronous callbacks into typed results; ``Outcome``
and the ``Daraja*Error`` classes are what callers branch on.
"""

from penpay.adapters.daraja.client import DarajaClient, sanitise
from penpay.adapters.daraja.codes import (
    DarajaAuthError,
    DarajaDuplicateError,
    DarajaError,
    DarajaOutcomeUnknown,
    DarajaPendingError,
    DarajaPermanentError,
    DarajaRefused,
    DarajaThrottledError,
    DarajaTransientError,
    ErrorClass,
    Outcome,
    b2c_outcome,
    classify_error,
    stk_outcome,
)
from penpay.adapters.daraja.wire import (
    Accepted,
    B2cQueueTimeout,
    B2cResult,
    DarajaPayloadError,
    StkCallback,
    StkPushResult,
    StkQueryResult,
    TransactionStatusResult,
    parse_b2c_queue_timeout,
    parse_b2c_result,
    parse_stk_callback,
    parse_transaction_status_result,
)

__all__ = [
    "Accepted",
    "B2cQueueTimeout",
    "B2cResult",
    "DarajaAuthError",
    "DarajaClient",
    "DarajaDuplicateError",
    "DarajaError",
    "DarajaOutcomeUnknown",
    "DarajaPayloadError",
    "DarajaPendingError",
    "DarajaPermanentError",
    "DarajaRefused",
    "DarajaThrottledError",
    "DarajaTransientError",
    "ErrorClass",
    "Outcome",
    "StkCallback",
    "StkPushResult",
    "StkQueryResult",
    "TransactionStatusResult",
    "b2c_outcome",
    "classify_error",
    "parse_b2c_queue_timeout",
    "parse_b2c_result",
    "parse_stk_callback",
    "parse_transaction_status_result",
    "sanitise",
    "stk_outcome",
]
