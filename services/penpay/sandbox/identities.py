"""The sandbox's M-Pesa test identities (docs/sandbox.md), like card test numbers in payment sandboxes.

These phone numbers behave in fixed ways; any other well-formed number behaves as an ordinary, funded customer.
The table in docs/sandbox.md is the contract: change both together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MSISDN_PATTERN = re.compile(r"^254[17]\d{8}$")


class StkBehaviour(StrEnum):
    PAID = "paid"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    WRONG_PIN = "wrong_pin"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    NO_CALLBACK = "no_callback"
    PAID_TWICE = "paid_callback_twice"


class B2cBehaviour(StrEnum):
    PAID = "paid"
    PAID_TWICE = "paid_result_twice"
    NOT_REGISTERED = "not_registered"
    QUEUE_TIMEOUT = "queue_timeout"
    NO_RESULT = "no_result"


@dataclass(frozen=True, slots=True)
class StkOutcome:
    """What the simulated customer's phone does with a prompt: the STK ResultCode and ResultDesc."""

    result_code: int
    result_desc: str
    deliver_callbacks: int  # 0 = the callback never comes, 2 = it comes twice

    @property
    def paid(self) -> bool:
        return self.result_code == 0


STK_OUTCOMES: dict[StkBehaviour, StkOutcome] = {
    StkBehaviour.PAID: StkOutcome(0, "The service request is processed successfully.", 1),
    StkBehaviour.CANCELLED: StkOutcome(1032, "Request cancelled by user", 1),
    StkBehaviour.TIMED_OUT: StkOutcome(1037, "DS timeout user cannot be reached", 1),
    StkBehaviour.WRONG_PIN: StkOutcome(2001, "The initiator information is invalid.", 1),
    StkBehaviour.INSUFFICIENT_BALANCE: StkOutcome(1, "The balance is insufficient for the transaction.", 1),
    StkBehaviour.NO_CALLBACK: StkOutcome(0, "The service request is processed successfully.", 0),
    StkBehaviour.PAID_TWICE: StkOutcome(0, "The service request is processed successfully.", 2),
}

_STK_IDENTITIES: dict[str, StkBehaviour] = {
    "254700000001": StkBehaviour.CANCELLED,
    "254700000002": StkBehaviour.TIMED_OUT,
    "254700000003": StkBehaviour.WRONG_PIN,
    "254700000004": StkBehaviour.INSUFFICIENT_BALANCE,
    "254700000005": StkBehaviour.NO_CALLBACK,
    "254700000006": StkBehaviour.PAID_TWICE,
}

_B2C_IDENTITIES: dict[str, B2cBehaviour] = {
    "254700000006": B2cBehaviour.PAID_TWICE,
    "254700000010": B2cBehaviour.NOT_REGISTERED,
    "254700000011": B2cBehaviour.QUEUE_TIMEOUT,
    "254700000012": B2cBehaviour.NO_RESULT,
}


def stk_behaviour(msisdn: str) -> StkBehaviour:
    return _STK_IDENTITIES.get(msisdn, StkBehaviour.PAID)


def b2c_behaviour(msisdn: str) -> B2cBehaviour:
    return _B2C_IDENTITIES.get(msisdn, B2cBehaviour.PAID)
