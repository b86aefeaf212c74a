"""Deposits and withdrawals initiated in batches: many ``POST /deposit`` (or ``POST /withdraw``) requests, one
database transaction, the same rules.

Under load the API collects the requests of one kind that arrive together (``service_layer.batching``) and creates
them with :func:`initiate_batch`: one MySQL transaction locks the users and reads the ledger accounts once for the
whole batch, writes every row with multi-row statements and commits once. The rules are exactly those of the
one-request paths (``service_layer.deposits.initiate_deposit``, ``service_layer.withdrawals.initiate_withdrawal``),
member by member, in arrival order:

- a withdrawal's Deriv account must be one its user linked (``AccountNotLinked``);
- the amount range and the user's Nairobi-day limit, on the KES a deposit takes or a withdrawal's gross KES value
  (each user's row is locked before the day's volume is read, and members of one user in one batch count against
  each other);
- the float (the Deriv float for deposits, the B2C float for withdrawals): each member's pending legs are applied in
  memory with the domain's ``ledger.apply`` to the accounts as the store reads them; a member the float cannot cover
  is refused (``FloatUnavailable``) and the others go on. The store writes the counters as one relative update right
  before the commit, under the table's CHECK constraints; should a concurrent transaction have spent the float
  meanwhile, the write raises ``InsufficientFunds`` and the caller runs the batch again with the accounts locked from
  the start;
- Stripe idempotency: a member whose key already exists (or repeats a key earlier in the batch) is not created here
  but answered ``KEY_TAKEN``, and the caller runs the one-request path, which replays, refuses (409/422) or takes the
  key over exactly as before. An accepted member's 202 body, and a member refused by a rule (4xx), are stored under
  its key in the same transaction as everything else; a 5xx refusal stores nothing, so the client may retry.

A withdrawal's e-mailed verification code is stored (encrypted, by the store) with its transaction. Nothing of a batch
is visible until its one commit, so a crash anywhere leaves either every member or none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from penpay.service_layer.deposits import DepositPolicy, FloatUnavailable
from penpay.service_layer.withdrawals import AccountNotLinked, unlinked_message
from penpay_domain import ledger
from penpay_domain.commands import InitiateDeposit, InitiateWithdrawal
from penpay_domain.errors import DomainError, InsufficientFunds
from penpay_domain.events import TransactionEvent
from penpay_domain.fx import LockedRate
from penpay_domain.ids import DerivLoginId, IdempotencyKey, TransactionId, UserId, new_transaction_id
from penpay_domain.limits import day_window
from penpay_domain.money import Money
from penpay_domain.ports import FxQuotes
from penpay_domain.transaction import Kind, Parties, Transaction

ACCEPTED = 202
Render = Callable[[Transaction], bytes]
Problem = Callable[[DomainError], tuple[int, bytes]]


Initiate = InitiateDeposit | InitiateWithdrawal


@dataclass(frozen=True, slots=True)
class Submission:
    """One ``POST /deposit`` or ``POST /withdraw`` waiting for its batch: the command and the request's idempotency
    hash. A batch holds one kind."""

    cmd: Initiate
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
    """An accepted member as the store writes it: the new aggregate with the transfers and events it recorded, and a
    withdrawal's verification code (the store keeps it encrypted)."""

    txn: Transaction
    transfers: list[ledger.Transfer]
    events: list[TransactionEvent]
    code: str | None = None


@dataclass(frozen=True, slots=True)
class BatchReads:
    taken: set[IdempotencyKey]
    volumes: dict[UserId, Money]
    accounts: dict[str, ledger.Account]
    linked: set[tuple[UserId, DerivLoginId]]


class BatchStore(Protocol):
    """One database transaction for one batch (the SQL adapter is ``adapters.db.batch_initiation``)."""

    @property
    def now(self) -> datetime: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def read(
        self,
        *,
        kind: Kind,
        keys: Sequence[IdempotencyKey],
        users: Sequence[UserId],
        window: tuple[datetime, datetime],
        codes: Sequence[str],
        logins: Sequence[tuple[UserId, DerivLoginId]] = (),
    ) -> BatchReads:
        """Everything the batch decides on, read together: which of ``keys`` exist already (in flight or answered);
        the users' limit rows locked until the transaction ends (``users`` sorted: one lock order), then the KES of
        their non-failed transactions of ``kind`` created in ``window`` (a withdrawal's gross value); the ledger
        accounts ``codes`` (a snapshot, or locked rows when the store was opened to lock them); which of ``logins``
        are linked."""
        ...

    async def write(
        self,
        *,
        created: Sequence[Created],
        before: Mapping[str, ledger.Account],
        after: Mapping[str, ledger.Account],
        answers: Sequence[KeyAnswer],
    ) -> list[TransactionEvent]:
        """Insert the transactions (and withdrawals' codes), their ledger transfers, outbox and audit rows and the key
        answers, move the
        accounts' counters from ``before`` to ``after`` (raising ``InsufficientFunds`` if, under concurrency, a
        balance rule would break after all), and commit. Returns the events with their outbox ids."""
        ...


@dataclass(frozen=True, slots=True)
class KindRules:
    """What differs between a batch of deposits and one of withdrawals."""

    kind: Kind
    draft: Callable[[Initiate, TransactionId, LockedRate, DepositPolicy, datetime], tuple[Transaction, Money]]
    """The new transaction and the KES the limits count, or the rule's ``DomainError`` (the amount range)."""
    float_short: str
    """What a member that the float cannot cover is told."""
    linked_only: bool = False


def _draft_deposit(
    cmd: Initiate, txn_id: TransactionId, quote: LockedRate, policy: DepositPolicy, now: datetime
) -> tuple[Transaction, Money]:
    policy.limits.check_amount(cmd.amount)
    parties = Parties(user_id=cmd.user_id, msisdn=cmd.msisdn, deriv_loginid=cmd.deriv_loginid)
    txn = Transaction.new_deposit(
        id=txn_id, parties=parties, amount_kes=cmd.amount, quote=quote, fee_policy=policy.fees, now=now
    )
    return txn, cmd.amount


def _draft_withdrawal(
    cmd: Initiate, txn_id: TransactionId, quote: LockedRate, policy: DepositPolicy, now: datetime
) -> tuple[Transaction, Money]:
    parties = Parties(user_id=cmd.user_id, msisdn=cmd.msisdn, deriv_loginid=cmd.deriv_loginid)
    txn = Transaction.new_withdrawal(
        id=txn_id, parties=parties, amount_usd=cmd.amount, quote=quote, fee_policy=policy.fees, now=now
    )
    gross = txn.amount_kes + txn.fee
    policy.limits.check_amount(gross)
    return txn, gross


DEPOSITS = KindRules(
    Kind.DEPOSIT, _draft_deposit, "PenPay cannot take deposits of this size right now; please try again later"
)
WITHDRAWALS = KindRules(
    Kind.WITHDRAWAL,
    _draft_withdrawal,
    "PenPay cannot pay out this amount right now; please try again later",
    linked_only=True,
)


async def initiate_batch(
    batch: Sequence[Submission],
    *,
    rules: KindRules,
    store: BatchStore,
    fx: FxQuotes,
    policy: DepositPolicy,
    render: Render,
    problem: Problem,
) -> tuple[list[Outcome], list[TransactionEvent]]:
    """Create the batch's transactions in one database transaction; returns each member's outcome (in order) and
    the committed events to publish."""
    outcomes: list[Outcome] = [KEY_TAKEN] * len(batch)
    answers: list[KeyAnswer] = []
    async with store:
        now = store.now
        # drafted first, in memory, so that one read can fetch everything the decisions need
        drafts: dict[int, tuple[Transaction, Money]] = {}
        refusals: dict[int, DomainError] = {}
        for i, submission in enumerate(batch):
            try:
                drafts[i] = rules.draft(submission.cmd, new_transaction_id(now), await fx.quote(now), policy, now)
            except DomainError as exc:
                refusals[i] = exc
        transfers = {i: txn.pull_ledger_transfers() for i, (txn, _) in drafts.items()}
        reads = await store.read(
            kind=rules.kind,
            keys=[s.cmd.idempotency_key for s in batch],
            users=sorted({s.cmd.user_id for s in batch}),
            window=day_window(now),
            codes=sorted({c for ts in transfers.values() for t in ts for p in t.postings for c in (p.debit, p.credit)}),
            logins=sorted({(s.cmd.user_id, s.cmd.deriv_loginid) for s in batch}) if rules.linked_only else (),
        )
        used = reads.volumes
        balances = dict(reads.accounts)
        created: list[Created] = []
        for i in _first_uses(batch, reads.taken):  # a member whose key is taken is the one-request path's
            cmd = batch[i].cmd
            if rules.linked_only and (cmd.user_id, cmd.deriv_loginid) not in reads.linked:
                outcomes[i] = _refuse(batch[i], AccountNotLinked(unlinked_message(cmd.deriv_loginid)), problem, answers)
                continue
            if i not in drafts:
                outcomes[i] = _refuse(batch[i], refusals[i], problem, answers)
                continue
            txn, counted = drafts[i]
            try:
                spent = used.get(cmd.user_id, Money.kes(0))
                policy.limits.check_daily(used_today=spent, amount=counted)
                balances = _reserve(balances, transfers[i], rules.float_short)
            except DomainError as exc:
                outcomes[i] = _refuse(batch[i], exc, problem, answers)
                continue
            used[cmd.user_id] = spent + counted
            body = render(txn)
            outcomes[i] = Accepted(txn, body)
            code = cmd.verification_code if isinstance(cmd, InitiateWithdrawal) else None
            created.append(Created(txn=txn, transfers=transfers[i], events=txn.pull_events(), code=code))
            answers.append(KeyAnswer(cmd.idempotency_key, batch[i].request_hash, ACCEPTED, body, txn.id))
        events = await store.write(created=created, before=reads.accounts, after=balances, answers=answers)
    return outcomes, events


def _first_uses(batch: Sequence[Submission], taken: set[IdempotencyKey]) -> list[int]:
    """Indexes of the members whose key is neither taken already nor used by an earlier member of the batch."""
    seen = set(taken)
    live = []
    for i, submission in enumerate(batch):
        key = submission.cmd.idempotency_key
        if key not in seen:
            seen.add(key)
            live.append(i)
    return live


def _reserve(
    balances: dict[str, ledger.Account], transfers: Sequence[ledger.Transfer], short: str
) -> dict[str, ledger.Account]:
    """The balances after this member's pending legs, all or none (``FloatUnavailable`` if the float is short)."""
    trial = dict(balances)
    try:
        for transfer in transfers:
            trial.update(ledger.apply(trial, transfer))
    except InsufficientFunds as exc:
        raise FloatUnavailable(short, account=exc.details.get("account")) from exc
    return trial


def _refuse(submission: Submission, exc: DomainError, problem: Problem, answers: list[KeyAnswer]) -> Refused:
    status, body = problem(exc)
    if status < 500:  # a rule's answer is the key's answer; a failure on our side leaves the key free
        answers.append(KeyAnswer(submission.cmd.idempotency_key, submission.request_hash, status, body, None))
    return Refused(status, body)
