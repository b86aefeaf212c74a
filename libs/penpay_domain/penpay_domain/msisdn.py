"""Kenyan mobile numbers (MSISDNs) as people type them, normalised to Daraja's ``2547XXXXXXXX``/``2541XXXXXXXX``."""

from __future__ import annotations

import re
from typing import NewType

from penpay_domain.errors import InvalidMsisdn

Msisdn = NewType("Msisdn", str)

_SEPARATORS = re.compile(r"[\s\-().]")


def parse_msisdn(text: str) -> Msisdn:
    """Accept ``07XXXXXXXX``, ``01XXXXXXXX``, ``+2547…``, ``2547…``, ``+2541…``, ``2541…``, with spaces, dashes or
    brackets between digits; return ``254`` + 9 digits. Anything else is rejected with the reason."""
    if not isinstance(text, str):
        raise InvalidMsisdn("a phone number is a string such as 0712345678")
    compact = _SEPARATORS.sub("", text)
    if not compact:
        raise InvalidMsisdn("the phone number is empty")
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    if not digits.isdigit() or not digits.isascii():
        raise InvalidMsisdn(f"{text!r} contains characters other than digits, spaces and a leading +")
    if plus and not digits.startswith("254"):
        raise InvalidMsisdn(f"{text!r} is not a Kenyan number: international numbers must start with +254")
    if digits.startswith("254"):
        national = digits[3:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        raise InvalidMsisdn(f"{text!r} is not a Kenyan mobile number: start with 07, 01, +254 or 254")
    if len(national) != 9:
        raise InvalidMsisdn(
            f"{text!r} has {len(national)} digit{'' if len(national) == 1 else 's'} after the prefix; "
            "a Kenyan mobile number has 9 (e.g. 0712345678)"
        )
    if national[0] not in "71":
        raise InvalidMsisdn(f"{text!r} is not a Kenyan mobile number: it must be 07… or 01…")
    return Msisdn("254" + national)


def mask_msisdn(msisdn: Msisdn) -> str:
    """For logs and e-mails: ``2547****5678``."""
    return msisdn[:4] + "****" + msisdn[-4:]
