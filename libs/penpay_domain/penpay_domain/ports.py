"""Ports: what the application needs from the outside world, as ``typing.Protocol``s. Adapters implement them;
fakes for tests implement them too (without inheriting) and are checked by mypy with one line each."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from penpay_domain.events import TransactionEvent
from penpay_domain.fx import LockedRate
from penpay_domain.ids import DerivLoginId, IdempotencyKey, PayoutId, TransactionId, UserId
from penpay_domain.ledger import Account, Transfer
from penpay_domain.money import Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.providers import (
    DerivAccount,
    DerivTransferOrder,
    DerivTransferResult,
    DerivWithdrawalOrder,
    Outcome,
    PaymentResult,
    PayoutRequestResult,
    StkPushResult,
)
from penpay_domain.transaction import Kind, LegState, Status, Transaction


class Clock(Protocol):
    def now(self) -> datetime: ...


# ---- persistence --------------------------------------------------------------------------------------------------
class TransactionRepository(Protocol):
    async def add(self, txn: Transaction) -> None: ...
    async def get(self, txn_id: TransactionId, *, for_update: bool = False) -> Transaction: ...
    async def get_many(
        self, txn_ids: Sequence[TransactionId], *, for_update: bool = False
    ) -> Mapping[TransactionId, Transaction]:
        """Those of ``txn_ids`` that exist (locked in id order if ``for_update``); one already loaded in this unit of
        work is returned as that same aggregate."""
        ...

    async def find_by_checkout_request_id(self, checkout_request_id: str) -> Transaction | None:
        """The transaction with this STK CheckoutRequestID, locked."""
        ...

    async def find_many_by_checkout_request_ids(self, checkout_request_ids: Sequence[str]) -> Mapping[str, Transaction]:
        """:meth:`find_by_checkout_request_id` for many (one statement, locked in id order); a later find of one of
        them in this unit of work returns it without a query of its own."""
        ...

    async def find_by_payout_id(self, payout_id: str) -> Transaction | None: ...
    async def find_by_conversation_id(self, conversation_id: str) -> Transaction | None: ...
    async def find_many_by_conversation_ids(self, conversation_ids: Sequence[str]) -> Mapping[str, Transaction]:
        """:meth:`find_by_conversation_id` for many (B2C ConversationIDs), as
        :meth:`find_many_by_checkout_request_ids` does for STK pushes."""
        ...

    async def save(self, txn: Transaction) -> None: ...
    async def save_many(self, txns: Sequence[Transaction]) -> None: ...
    async def kes_volume(self, user_id: UserId, kind: Kind, start: datetime, end: datetime) -> Money: ...
    async def list_for_user(
        self, user_id: UserId, *, after: TransactionId | None, limit: int
    ) -> Sequence[Transaction]: ...
    async def statuses(self) -> Mapping[TransactionId, tuple[Kind, Status]]:
        """Every transaction's kind and status (for the ledger invariant check)."""
        ...

    async def list_by_status(
        self, statuses: Sequence[Status], *, updated_before: datetime | None = None, limit: int = 100
    ) -> Sequence[Transaction]: ...


class LedgerRepository(Protocol):
    async def ensure_chart(self) -> None: ...
    async def apply(self, transfer: Transfer) -> bool:
        """Apply a transfer; False (and nothing written) if a transfer with this id already exists."""
        ...

    async def accounts(self) -> Sequence[Account]: ...
    async def account(self, code: str, *, for_update: bool = False) -> Account: ...
    async def entry_totals(self) -> Mapping[str, Mapping[str, int]]:
        """Each account's four counters recomputed from its entries."""
        ...

    async def leg_states(self) -> Mapping[str, Mapping[str, LegState]]:
        """For every transaction: the state of each of its ledger legs, as the ledger's transfers show it."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    key: IdempotencyKey
    request_hash: str
    status_code: int | None  # None while the first request is still in flight
    response_body: bytes | None
    transaction_id: TransactionId | None
    created_at: datetime


class IdempotencyRepository(Protocol):
    async def begin(self, key: IdempotencyKey, request_hash: str, now: datetime) -> IdempotencyRecord | None:
        """Claim the key. None if claimed now; else the existing record (in flight or finished)."""
        ...

    async def finish(
        self, key: IdempotencyKey, *, status_code: int, body: bytes, transaction_id: TransactionId | None
    ) -> None: ...
    async def release(self, key: IdempotencyKey) -> None: ...


class ProcessedMessages(Protocol):
    async def mark(self, consumer_group: str, message_key: str, now: datetime) -> bool:
        """Record that a message was handled; False if it already was (the handler must then do nothing)."""
        ...

    async def seen(self, consumer_group: str, message_key: str) -> bool: ...
    async def seen_many(self, consumer_group: str, message_keys: Sequence[str]) -> set[str]: ...
    async def mark_many(self, consumer_group: str, message_keys: Sequence[str], now: datetime) -> int:
        """Returns how many of the keys were not recorded yet."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    ok: bool
    rows: int
    first_bad_row: int | None
    reason: str | None


class AuditLog(Protocol):
    async def append(self, *, actor: str, action: str, subject: str, payload: dict[str, Any], now: datetime) -> None:
        """Record an entry in the caller's transaction; it joins the hash chain shortly after the commit."""
        ...

    async def append_many(
        self, *, actor: str, entries: Sequence[tuple[str, str, dict[str, Any]]], now: datetime
    ) -> None:
        """Record several (action, subject, payload) entries, in order, as ``append`` would one by one."""
        ...

    async def verify(self) -> ChainReport: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkedAccount:
    user_id: UserId
    loginid: DerivLoginId
    currency: str
    token_ciphertext: bytes
    linked_at: datetime
    email: str = ""  # the Deriv account's e-mail (from authorize): where notifications go


class LinkedAccountRepository(Protocol):
    async def upsert(self, account: LinkedAccount) -> None: ...
    async def get(self, user_id: UserId, loginid: DerivLoginId) -> LinkedAccount | None: ...
    async def get_many(
        self, keys: Sequence[tuple[UserId, DerivLoginId]]
    ) -> Mapping[tuple[UserId, DerivLoginId], LinkedAccount]:
        """Those of ``keys`` (user, login id) that are linked (one query)."""
        ...


class UnitOfWork(Protocol):
    """One database transaction. Rolls back unless ``commit`` is called; ``commit`` writes the aggregates' ledger
    transfers and events (as outbox rows) in the same transaction."""

    @property
    def transactions(self) -> TransactionRepository: ...
    @property
    def ledger(self) -> LedgerRepository: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...
    @property
    def processed(self) -> ProcessedMessages: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def linked_accounts(self) -> LinkedAccountRepository: ...
    @property
    def now(self) -> datetime:
        """The time the unit of work began: one clock reading for everything it writes."""
        ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def commit(self, *, carried: Collection[str] = ()) -> list[TransactionEvent]:
        """Commit, returning the events written to the outbox (to publish right away). Events whose name is in
        ``carried`` are taken on by the committing step itself (it goes on to do what their consumer would): their
        outbox rows are written already published and they are not published after the commit; the step publishes
        one itself when it cannot finish it, and the reconciler re-drives it if the process dies first."""
        ...

    async def rollback(self) -> None: ...


# ---- messaging ----------------------------------------------------------------------------------------------------
class EventPublisher(Protocol):
    async def publish(self, events: Sequence[TransactionEvent]) -> None: ...


# ---- providers ----------------------------------------------------------------------------------------------------
class FxQuotes(Protocol):
    async def quote(self, now: datetime) -> LockedRate: ...


class Mpesa(Protocol):
    async def ready(self) -> bool:
        """Whether a request could be sent at once (Daraja: an access token in hand, fetched now if need be). A step
        asks before it records an intent, so no network round trip stands between the intent and the request;
        False: nothing was sent, and nothing should be recorded."""
        ...

    async def stk_push(
        self, *, txn_id: TransactionId, amount: Money, msisdn: Msisdn, callback_url: str
    ) -> StkPushResult: ...
    async def stk_query(self, *, checkout_request_id: str) -> PaymentResult: ...
    async def b2c_payout(
        self,
        *,
        payout_id: PayoutId,
        amount: Money,
        msisdn: Msisdn,
        remarks: str,
        result_url: str,
        timeout_url: str,
    ) -> PayoutRequestResult: ...
    async def transaction_status(self, *, payout_id: PayoutId, result_url: str, timeout_url: str) -> Outcome: ...


class DerivGateway(Protocol):
    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult: ...
    async def transfer_many(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        """Several transfers at once, each exactly as ``transfer`` makes it: one answer per order, in order, or the
        exception ``transfer`` would have raised for it."""
        ...

    async def withdraw(
        self,
        *,
        reference: str,
        loginid: DerivLoginId,
        token_ciphertext: bytes,
        amount: Money,
        verification_code: str,
    ) -> DerivTransferResult: ...
    async def withdraw_many(self, orders: Sequence[DerivWithdrawalOrder]) -> list[DerivTransferResult | Exception]:
        """Several withdrawals at once, each exactly as ``withdraw`` makes it: one answer per order, in order, or the
        exception ``withdraw`` would have raised for it."""
        ...

    async def request_withdrawal_code(self, *, loginid: DerivLoginId, token_ciphertext: bytes) -> Outcome: ...
    async def find_transfer(self, *, reference: str) -> DerivTransferResult: ...
    async def balance(self) -> Money: ...
    async def link_account(self, *, token: str) -> tuple[DerivAccount, bytes]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Mail:
    """One plain-text e-mail: its recipient, subject and body."""

    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, *, to: str, subject: str, body: str) -> None: ...

    async def send_many(self, mails: Sequence[Mail]) -> list[Exception | None]:
        """Each mail's outcome, in order: None when the server took it, else why not (a refusal of one does not
        stop the others)."""
        ...


__all__ = [
    "AuditLog",
    "ChainReport",
    "Clock",
    "DerivGateway",
    "EventPublisher",
    "FxQuotes",
    "IdempotencyRecord",
    "IdempotencyRepository",
    "LedgerRepository",
    "LinkedAccount",
    "LinkedAccountRepository",
    "Mail",
    "Mailer",
    "Mpesa",
    "Outcome",
    "ProcessedMessages",
    "TransactionRepository",
    "UnitOfWork",
]
