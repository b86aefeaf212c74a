"""Daraja's wire formats as the simulator speaks them: request validation, error envelopes, ids, callback bodies.

Written from ../shared/reference/daraja.md, independently of PenPay's client (adapters/daraja), so that the two
cannot share a misunderstanding. Callback bodies are rendered to JSON text by :func:`to_json` so that amounts such
as ``100.00`` are JSON numbers with two decimals, as Safaricom sends them, without a float anywhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import string
from collections.abc import Mapping

from penpay.sandbox.identities import MSISDN_PATTERN
from penpay.sandbox.json_text import compact_json, quote

EAT = dt.timezone(dt.timedelta(hours=3), "EAT")

STK_MIN_KES, STK_MAX_KES = 1, 250_000
B2C_MIN_KES, B2C_MAX_KES = 10, 250_000
TRANSACTION_TYPES = frozenset({"CustomerPayBillOnline", "CustomerBuyGoodsOnline"})
B2C_COMMANDS = frozenset({"BusinessPayment", "SalaryPayment", "PromotionPayment"})
FORBIDDEN_URL_WORDS = ("mpesa", "m-pesa", "safaricom", "sql", "query", "exec", "exe", "cmd")
_SHORTCODE = re.compile(r"^\d{5,7}$")
_TIMESTAMP = re.compile(r"^\d{14}$")


class JsonNumber(str):
    """A JSON number written verbatim (``100.00``), so callback bodies carry Daraja's decimals exactly."""

    __slots__ = ()


def to_json(value: object) -> str:
    """Serialise dicts, lists, str, int, bool, None and :class:`JsonNumber` to compact JSON text."""
    return compact_json(value, _daraja_scalar)


def _daraja_scalar(value: object) -> str:
    if isinstance(value, JsonNumber):
        return str(value)
    if isinstance(value, str):  # a str subclass (an enum's value, say): as json.dumps writes it
        return quote(value)
    if isinstance(value, int):  # an int subclass (bools are written before this is asked)
        return int.__repr__(value)
    raise TypeError(f"not serialisable in a Daraja body: {type(value).__name__}")


def money(cents: int) -> JsonNumber:
    """Integer cents as a JSON number with two decimals: 896926960 -> 8969269.60, -198000 -> -1980.00."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return JsonNumber(f"{sign}{whole}.{frac:02d}")


class DarajaError(Exception):
    """A synchronous Daraja error: HTTP status plus the ``{requestId, errorCode, errorMessage}`` envelope."""

    def __init__(self, status: int, code: str, message: str, request_id: str = "") -> None:
        super().__init__(f"{code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def body(self) -> dict[str, str]:
        return {
            "requestId": self.request_id or request_id(),
            "errorCode": self.code,
            "errorMessage": self.message,
        }


def bad_request(field: str) -> DarajaError:
    return DarajaError(400, "400.002.02", f"Bad Request - Invalid {field}")


def invalid_payload() -> DarajaError:
    return DarajaError(400, "400.002.05", "Invalid Request Payload")


def invalid_token() -> DarajaError:
    return DarajaError(404, "404.001.03", "Invalid Access Token")


def invalid_auth_header() -> DarajaError:
    return DarajaError(404, "404.001.04", "Invalid Authentication Header")


def wrong_credentials() -> DarajaError:
    return DarajaError(500, "500.001.1001", "Wrong credentials")


def merchant_unknown() -> DarajaError:
    return DarajaError(500, "500.001.1001", "Merchant does not exist")


def subscriber_locked() -> DarajaError:
    return DarajaError(
        500,
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )


def still_processing(checkout_id: str) -> DarajaError:
    return DarajaError(500, "500.001.1001", "The transaction is being processed", request_id=checkout_id)


def duplicate_originator() -> DarajaError:
    return DarajaError(500, "500.002.1001", "Duplicate OriginatorConversationID.")


def bad_auth_type() -> DarajaError:
    return DarajaError(400, "400.008.01", "Invalid authentication type passed")


def bad_grant_type() -> DarajaError:
    return DarajaError(400, "400.008.02", "Invalid grant type passed")


# ------------------------------------------------------------------------------------------ ids


def _digits(n: int) -> str:
    """``n`` random decimal digits (one draw, not one per digit: the sandbox mints several ids per request)."""
    return f"{secrets.randbelow(10**n):0{n}d}"


def request_id() -> str:
    return f"{_digits(5)}-{_digits(8)}-1"


def merchant_request_id() -> str:
    return f"{_digits(5)}-{_digits(8)}-1"


def checkout_request_id(now: dt.datetime) -> str:
    return "ws_CO_" + now.astimezone(EAT).strftime("%d%m%Y%H%M%S") + _digits(10)


def conversation_id(now: dt.datetime) -> str:
    return "AG_" + now.astimezone(EAT).strftime("%Y%m%d") + "_" + secrets.token_hex(10)


def originator_conversation_id() -> str:
    """Daraja's own form, e.g. ``7071-4170-a0e5-8345632bad442144258`` (reference §6)."""
    h = secrets.token_hex(10)
    return f"{h[:4]}-{h[4:8]}-{h[8:12]}-{h[12:20]}{_digits(6)}"


def _drawn(alphabet: str, n: int) -> str:
    """``n`` random characters of ``alphabet``, uniformly, from one draw (not a system call per character)."""
    value, out = secrets.randbelow(len(alphabet) ** n), []
    for _ in range(n):
        value, i = divmod(value, len(alphabet))
        out.append(alphabet[i])
    return "".join(out)


def receipt(prefix: str = "S") -> str:
    return prefix + _drawn(string.ascii_uppercase + string.digits, 9)


def access_token() -> str:
    return _drawn(string.ascii_letters + string.digits, 28)


def eat_compact(now: dt.datetime) -> str:
    return now.astimezone(EAT).strftime("%Y%m%d%H%M%S")


# ------------------------------------------------------------------------------------------ validation


def require_str(body: Mapping[str, object], field: str, *, max_len: int = 100, min_len: int = 1) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not (min_len <= len(value) <= max_len):
        raise bad_request(field)
    return value


def optional_str(body: Mapping[str, object], field: str, *, max_len: int) -> str | None:
    if field not in body or body[field] is None:
        return None
    return require_str(body, field, max_len=max_len)


def numeric_text(body: Mapping[str, object], field: str, pattern: re.Pattern[str]) -> str:
    """A field Daraja calls Numeric: sent as a JSON string or number, never a bool or a fraction."""
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request(field)
    text = str(value)
    if not pattern.match(text):
        raise bad_request(field)
    return text


def shortcode(body: Mapping[str, object], field: str) -> str:
    return numeric_text(body, field, _SHORTCODE)


def msisdn(body: Mapping[str, object], field: str) -> str:
    return numeric_text(body, field, MSISDN_PATTERN)


def amount(body: Mapping[str, object], field: str, low: int, high: int) -> int:
    """Whole shillings; the portal sample sends ``"1"`` as a string, clients send an integer."""
    value = body.get(field)
    if isinstance(value, bool):
        raise bad_request(field)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not (low <= value <= high):
        raise bad_request(field)
    return value


def timestamp(body: Mapping[str, object]) -> str:
    value = body.get("Timestamp")
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise bad_request("Timestamp")
    try:  # a real date and time (the pattern checked the digits): what strptime checks, at a tenth of its cost
        dt.datetime(  # noqa: DTZ001 - only the calendar fields are checked
            int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[8:10]), int(value[10:12]), int(value[12:14])
        )
    except ValueError:
        raise bad_request("Timestamp") from None
    return value


def callback_url(body: Mapping[str, object], field: str) -> str:
    """Daraja refuses URLs that are not http(s), contain spaces, or name words it blocks (reference §7)."""
    value = body.get(field)
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value) or any(c.isspace() for c in value):
        raise bad_request(field)
    lowered = value.lower()
    if any(word in lowered for word in FORBIDDEN_URL_WORDS):
        raise bad_request(field)
    return value


def stk_password(business_shortcode: str, passkey: str, ts: str) -> str:
    return base64.b64encode(f"{business_shortcode}{passkey}{ts}".encode()).decode("ascii")
