"""Deposit initiation in batches: many ``POST /deposit`` requests, one database transaction, the same rules.

Under load the API collects the deposits that arrive together (``service_layer.batching``) and creates them with
:func:`initiate_deposits`: one MySQL transaction locks the users and the ledger accounts once for the whole batch,
writes every row with multi-row statements and commits once. The rules are exactly those of
``service_layer.deposits.initiate_deposit``, member by member, in arrival order:

- the amount range and the user's Nairobi-day limit (each user's row is locked before the day's volume is read, and
  members of one user in one batch count against each other);
- the Deriv float: each member's pending legs are applied in memory with the domain's ``ledger.apply`` to the
  accounts as the store reads them; a member the float cannot cover is refused (``FloatUnavailable``) and the others
  go on. The store writes the counters as one relative update right before the commit, under the table's CHECK
  constraints; should a concurrent transaction have spent the float meanwhile, the write raises
  ``InsufficientFunds`` and the caller runs the batch again with the accounts locked from the start;
- Stripe idempotency: a member whose key already exists (or repeats a key earlier in the batch) is not created here
  but answered ``KEY_TAKEN``, and the caller runs the one-request path, which replays, refuses (409/422) or takes the
  key over exactly as before. An accepted member's 202 body, and a member refused by a rule (4xx), are stored under
  its key in the same transaction as everything else; a 5xx refusal stores nothing, so the client may retry.

Nothing of a batch is visible until its one commit, so a crash anywhere leaves either every member or none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from penpay.service_layer.deposits import DepositPolicy, FloatUnavailable
from penpay_domain import ledger
from penpay_domain.commands import InitiateDeposit
from penpay_domain.errors import DomainError, InsufficientFunds
from penpay_domain.events import TransactionEvent
from penpay_domain.ids import IdempotencyKey, UserId, new_transaction_id
from penpay_domain.limits import day_window
from penpay_domain.money import Money
from penpay_domain.ports import FxQuotes
from penpay_domain.transaction import Parties, Transaction

ACCEPTED = 202
Render = Callable[[Transaction], bytes]
Problem = Callable[[DomainError], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class DepositSubmission:
    """One ``POST /deposit`` waiting for its batch: the command and the request's idempotency hash."""

    cmd: InitiateDeposit
    request_hash: str


@dataclass(frozen=True, slots=True)
class Accepted:
    txn: Transaction
    body: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """Refused by a rule or by the float: the problem's status and body (stored under the key when < 500)."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class KeyTaken:
    """The key exists already: the caller answers through the one-request idempotency path."""


KEY_TAKEN = KeyTaken()
Outcome = Accepted | Refused | KeyTaken


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """What an idempotency key answers from now on."""

    key: IdempotencyKey
    request_hash: str
    status_code: int
    body: bytes
    transaction_id: str | None


@dataclass(frozen=True, slots=True)
class Created:
    """An accepted member as the store writes it: the new aggregate with the transfers and events it recorded."""

    txn: Transaction
    transfers: list[ledger.Transfer]
    events: list[TransactionEvent]


@dataclass(frozen=True, slots=True)
class BatchReads:
    taken: set[IdempotencyKey]
    volumes: dict[UserId, Money]
    accounts: dict[str, ledger.Account]


class DepositBatchStore(Protocol):
    """One database transaction for one batch (the SQL adapter is ``adapters.db.deposit_batch``)."""

    @property
    def now(self) -> datetime: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def read(
        self,
        *,
        keys: Sequence[IdempotencyKey],
        users: Sequence[UserId],
        window: tuple[datetime, datetime],
        codes: Sequence[str],
    ) -> BatchReads:
        """Everything the batch decides on, read together: which of ``keys`` exist already (in flight or answered);
        the users' limit rows locked until the transaction ends (``users`` sorted: one lock order), then their KES of
        non-failed deposits created in ``window``; the ledger accounts ``codes`` (a snapshot, or locked rows when the
        store was opened to lock them)."""
        ...

    async def write(
        self,
        *,
        created: Sequence[Created],
        before: Mapping[str, ledger.Account],
        after: Mapping[str, ledger.Account],
        answers: Sequence[KeyAnswer],
    ) -> list[TransactionEvent]:
        """Insert the transactions, their ledger transfers, outbox and audit rows and the key answers, move the
        accounts' counters from ``before`` to ``after`` (raising ``InsufficientFunds`` if, under concurrency, a
        balance rule would break after all), and commit. Returns the events with their outbox ids."""
        ...


async def initiate_deposits(
    batch: Sequence[DepositSubmission],
    *,
    store: DepositBatchStore,
    fx: FxQuotes,
    policy: DepositPolicy,
    render: Render,
    problem: Problem,
) -> tuple[list[Outcome], list[TransactionEvent]]:
    """Create the batch's deposits in one transaction; returns each member's outcome (in order) and the committed
    events to publish."""
    outcomes: list[Outcome] = [KEY_TAKEN] * len(batch)
    answers: list[KeyAnswer] = []
    async with store:
        now = store.now
        # drafted first, in memory, so that one read can fetch everything the decisions need
        drafts: dict[int, Transaction] = {}
        refusals: dict[int, DomainError] = {}
        for i, submission in enumerate(batch):
            cmd = submission.cmd
            try:
                policy.limits.check_amount(cmd.amount)
                drafts[i] = Transaction.new_deposit(
                    id=new_transaction_id(now),
                    parties=Parties(user_id=cmd.user_id, msisdn=cmd.msisdn, deriv_loginid=cmd.deriv_loginid),
                    amount_kes=cmd.amount,
                    quote=await fx.quote(now),
                    fee_policy=policy.fees,
                    now=now,
                )
            except DomainError as exc:
                refusals[i] = exc
        transfers = {i: txn.pull_ledger_transfers() for i, txn in drafts.items()}
        reads = await store.read(
            keys=[s.cmd.idempotency_key for s in batch],
            users=sorted({s.cmd.user_id for s in batch}),
            window=day_window(now),
            codes=sorted({c for ts in transfers.values() for t in ts for p in t.postings for c in (p.debit, p.credit)}),
        )
        used = reads.volumes
        balances = dict(reads.accounts)
        created: list[Created] = []
        for i in _first_uses(batch, reads.taken):  # a member whose key is taken is the one-request path's
            cmd = batch[i].cmd
            txn = drafts.get(i)
            if txn is None:
                outcomes[i] = _refuse(batch[i], refusals[i], problem, answers)
                continue
            try:
                spent = used.get(cmd.user_id, Money.kes(0))
                policy.limits.check_daily(used_today=spent, amount=cmd.amount)
                balances = _reserve(balances, transfers[i])
            except DomainError as exc:
                outcomes[i] = _refuse(batch[i], exc, problem, answers)
                continue
            used[cmd.user_id] = spent + cmd.amount
            body = render(txn)
            outcomes[i] = Accepted(txn, body)
            created.append(Created(txn=txn, transfers=transfers[i], events=txn.pull_events()))
            answers.append(KeyAnswer(cmd.idempotency_key, batch[i].request_hash, ACCEPTED, body, txn.id))
        events = await store.write(created=created, before=reads.accounts, after=balances, answers=answers)
    return outcomes, events


def _first_uses(batch: Sequence[DepositSubmission], taken: set[IdempotencyKey]) -> list[int]:
    """Indexes of the members whose key is neither taken already nor used by an earlier member of the batch."""
    seen = set(taken)
    live = []
    for i, submission in enumerate(batch):
        key = submission.cmd.idempotency_key
        if key not in seen:
            seen.add(key)
            live.append(i)
    return live


def _reserve(balances: dict[str, ledger.Account], transfers: Sequence[ledger.Transfer]) -> dict[str, ledger.Account]:
    """The balances after this member's pending legs, all or none (``FloatUnavailable`` if the float is short)."""
    trial = dict(balances)
    try:
        for transfer in transfers:
            trial.update(ledger.apply(trial, transfer))
    except InsufficientFunds as exc:
        raise FloatUnavailable(
            "PenPay cannot take deposits of this size right now; please try again later",
            account=exc.details.get("account"),
        ) from exc
    return trial


def _refuse(submission: DepositSubmission, exc: DomainError, problem: Problem, answers: list[KeyAnswer]) -> Refused:
    status, body = problem(exc)
    if status < 500:  # a rule's answer is the key's answer; a failure on our side leaves the key free
        answers.append(KeyAnswer(submission.cmd.idempotency_key, submission.request_hash, status, body, None))
    return Refused(status, body)
