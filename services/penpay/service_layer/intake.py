"""What the API's use cases need from a unit of work beyond the domain's ``UnitOfWork`` port.

- ``user_limits.lock(user)`` serialises one user's money requests for the rest of the database transaction, so a
  daily-limit check and the insert it allows cannot interleave with another request of the same user;
- ``withdrawal_codes`` keeps the Deriv e-mail verification code of a withdrawal (a secret: encrypted at rest by the
  adapter, never logged) until the Deriv debit it authorises has its answer;
- ``callbacks`` is the durable inbox of raw M-Pesa callbacks (append-only), written before Safaricom is answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from penpay_domain.ids import TransactionId, UserId
from penpay_domain.ports import UnitOfWork


class CallbackKind(StrEnum):
    STK = "stk"
    B2C_RESULT = "b2c_result"
    B2C_TIMEOUT = "b2c_timeout"
    STATUS_RESULT = "status_result"  # the answer to a Transaction Status query about a payout
    STATUS_TIMEOUT = "status_timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedCallback:
    """A callback as it arrived: who sent it, whether its URL token and source address checked out, the raw body."""

    kind: CallbackKind
    transaction_id: TransactionId | None  # from the URL; None when absent or malformed
    source_ip: str
    source_allowed: bool
    token_valid: bool
    body: str

    @property
    def verified(self) -> bool:
        return self.source_allowed and self.token_valid


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCallback:
    id: int
    received_at: datetime
    callback: ReceivedCallback


class UserLimits(Protocol):
    async def lock(self, user_id: UserId) -> None:
        """Hold this user's row lock until the unit of work ends."""
        ...


class WithdrawalCodes(Protocol):
    async def put(self, txn_id: TransactionId, code: str) -> None: ...
    async def take(self, txn_id: TransactionId) -> str | None:
        """The code, removed as it is read (single use); None if absent."""
        ...

    async def take_many(self, txn_ids: Sequence[TransactionId]) -> dict[TransactionId, str]:
        """``take`` for several (one read and one delete): the codes of those that have one."""
        ...

    async def get_many(self, txn_ids: Sequence[TransactionId]) -> dict[TransactionId, str]:
        """The codes of those that have one, read under row locks and kept (``drop_many`` removes them)."""
        ...

    async def drop_many(self, txn_ids: Sequence[TransactionId]) -> None:
        """Forget these codes (the debit they authorised has its answer, or will never be sent)."""
        ...


class CallbackInbox(Protocol):
    async def add(self, callback: ReceivedCallback) -> StoredCallback: ...
    async def add_many(self, callbacks: Sequence[ReceivedCallback]) -> list[StoredCallback]:
        """Store several, in order (one statement where the database allows)."""
        ...

    async def get(self, callback_id: int) -> StoredCallback: ...
    async def get_many(self, callback_ids: Sequence[int]) -> Mapping[int, StoredCallback]:
        """Those of ``callback_ids`` that exist (one query)."""
        ...


class IntakeUnitOfWork(UnitOfWork, Protocol):
    @property
    def user_limits(self) -> UserLimits: ...
    @property
    def withdrawal_codes(self) -> WithdrawalCodes: ...
    @property
    def callbacks(self) -> CallbackInbox: ...
