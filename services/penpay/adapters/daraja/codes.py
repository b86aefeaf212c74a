"""Daraja's result and error codes, mapped to what they mean for PenPay (reference/daraja.md §2, §3, §5).

Two rules from the reference shape this module: an unknown non-zero result code is FAILED with the raw code kept,
never PAID; and a synchronous error is classified on its errorCode *plus* its errorMessage, because Daraja reuses
one code (``500.001.1001``, ``500.003.02``, ``500.002.1001``) for unrelated causes.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What a result code says happened to the money."""

    PAID = "paid"
    CANCELLED = "cancelled"  # the customer pressed cancel
    TIMED_OUT = "timed_out"  # the customer could not be reached or did not answer in time
    WRONG_PIN = "wrong_pin"
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the payer (STK) or PenPay's B2C utility float (B2C)
    REJECTED = "rejected"  # refused by M-Pesa's rules or configuration: limits, product, initiator, recipient
    FAILED = "failed"  # any other non-zero code; the raw code is kept next to it
    PENDING = "pending"  # not finished yet (STK Push Query's "being processed")
    UNKNOWN = "unknown"  # M-Pesa may or may not have executed it: ask before acting (queue timeout, read timeout)


_STK: dict[str, Outcome] = {
    "0": Outcome.PAID,
    "1": Outcome.INSUFFICIENT_FUNDS,
    "2": Outcome.REJECTED,
    "3": Outcome.REJECTED,
    "4": Outcome.REJECTED,
    "8": Outcome.REJECTED,
    "17": Outcome.REJECTED,
    "1019": Outcome.TIMED_OUT,
    "1031": Outcome.CANCELLED,
    "1032": Outcome.CANCELLED,
    "1037": Outcome.TIMED_OUT,
    "2001": Outcome.WRONG_PIN,  # in STK, 2001 means the customer's PIN was wrong
    "2028": Outcome.REJECTED,
    "8006": Outcome.REJECTED,
    "SFC_IC0003": Outcome.REJECTED,
}

_B2C: dict[str, Outcome] = {
    "0": Outcome.PAID,
    "1": Outcome.INSUFFICIENT_FUNDS,  # PenPay's B2C utility account: page ops, pause payouts
    "2": Outcome.REJECTED,
    "3": Outcome.REJECTED,
    "4": Outcome.REJECTED,
    "8": Outcome.REJECTED,
    "11": Outcome.REJECTED,
    "21": Outcome.REJECTED,
    "2001": Outcome.REJECTED,  # in B2C, 2001 means PenPay's initiator credentials are wrong
    "2006": Outcome.REJECTED,
    "2028": Outcome.REJECTED,
    "2040": Outcome.REJECTED,
    "8006": Outcome.REJECTED,
    "SFC_IC0003": Outcome.REJECTED,
}

# B2C/Transaction Status codes that mean PenPay's own configuration is broken: alert, stop payouts (§11.8).
CONFIG_ALERT_CODES = frozenset({"1", "21", "2001", "2028", "8006"})


def normalise_code(code: object) -> str:
    """ResultCode arrives as a JSON number or a string depending on the API; compare them as text."""
    if isinstance(code, bool) or code is None:
        raise ValueError(f"not a Daraja result code: {code!r}")
    return str(code).strip()


def stk_outcome(code: object) -> Outcome:
    return _STK.get(normalise_code(code), Outcome.FAILED)


def b2c_outcome(code: object) -> Outcome:
    return _B2C.get(normalise_code(code), Outcome.FAILED)


class ErrorClass(StrEnum):
    """How to treat a synchronous Daraja error (the request was refused, nothing was executed)."""

    PERMANENT = "permanent"  # fix the input or the configuration; retrying the same request fails again
    TRANSIENT = "transient"  # try again later (a new request)
    THROTTLED = "throttled"  # back off: spike arrest or quota
    DUPLICATE = "duplicate"  # this OriginatorConversationID was already submitted: reconcile, do not resend
    AUTH = "auth"  # the token or the app's credentials were refused
    PENDING = "pending"  # STK Push Query: the transaction is still being processed


_AUTH_CODES = frozenset(
    {"404.001.03", "404.001.04", "400.003.01", "401.003.01", "400.008.01", "400.008.02", "401.002.01"}
)


def classify_error(error_code: str, error_message: str) -> ErrorClass:
    code = error_code.strip()
    message = error_message.lower()
    if code in _AUTH_CODES or "access token" in message:
        return ErrorClass.AUTH
    if code == "500.002.1001":
        return ErrorClass.DUPLICATE if "duplicate" in message else ErrorClass.TRANSIENT
    if code == "500.001.1001":
        if "being processed" in message:
            return ErrorClass.PENDING
        if "unable to lock subscriber" in message:
            return ErrorClass.TRANSIENT
        return ErrorClass.PERMANENT  # wrong credentials, merchant does not exist
    if code.startswith("500.003."):
        if "spike arrest" in message or "quota" in message:
            return ErrorClass.THROTTLED
        return ErrorClass.TRANSIENT  # "System is busy", internal server error
    if code.startswith("500."):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT  # 400.002.02 invalid field, 400.002.05 payload, 404.001.01 path, 405.001


# ------------------------------------------------------------------------------------------ exceptions


class DarajaError(Exception):
    """Base of everything the Daraja client raises."""


class DarajaOutcomeUnknown(DarajaError):
    """A money-moving request may or may not have been executed (e.g. a read timeout after it was sent).

    Never resend it blindly: ask (STK Push Query, Transaction Status) or leave it to reconciliation.
    """


class DarajaRefused(DarajaError):
    """Daraja refused the request synchronously (nothing was executed), or it never reached Daraja."""

    error_class: ErrorClass = ErrorClass.PERMANENT

    def __init__(self, *, http_status: int | None, error_code: str, error_message: str, request_id: str = "") -> None:
        super().__init__(f"{error_code or http_status}: {error_message}")
        self.http_status = http_status
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id


class DarajaPermanentError(DarajaRefused):
    error_class = ErrorClass.PERMANENT


class DarajaTransientError(DarajaRefused):
    error_class = ErrorClass.TRANSIENT


class DarajaThrottledError(DarajaRefused):
    error_class = ErrorClass.THROTTLED


class DarajaDuplicateError(DarajaRefused):
    error_class = ErrorClass.DUPLICATE


class DarajaAuthError(DarajaRefused):
    error_class = ErrorClass.AUTH


class DarajaPendingError(DarajaRefused):
    error_class = ErrorClass.PENDING


_ERRORS: dict[ErrorClass, type[DarajaRefused]] = {
    ErrorClass.PERMANENT: DarajaPermanentError,
    ErrorClass.TRANSIENT: DarajaTransientError,
    ErrorClass.THROTTLED: DarajaThrottledError,
    ErrorClass.DUPLICATE: DarajaDuplicateError,
    ErrorClass.AUTH: DarajaAuthError,
    ErrorClass.PENDING: DarajaPendingError,
}


def refusal(*, http_status: int | None, error_code: str, error_message: str, request_id: str = "") -> DarajaRefused:
    """The exception for one synchronous error envelope, by its errorCode plus errorMessage."""
    cls = _ERRORS[classify_error(error_code, error_message)]
    return cls(http_status=http_status, error_code=error_code, error_message=error_message, request_id=request_id)
