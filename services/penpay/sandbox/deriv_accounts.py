"""The Deriv simulator's books: accounts in integer cents, their statements, tokens and the test identities.

Pure state, no I/O: ``deriv.py`` speaks the WebSocket protocol on top of it. The identities are the fixed
contract of docs/sandbox.md; any other well-formed login id is an ordinary funded USD customer, created on
first use.

Every change of the books (a funding, a movement, a verification code issued or used) is also handed to
``recorder`` as a JSON-able record, and :meth:`DerivBooks.replay` applies such a record again with its own
transaction ids and times: ``deriv_journal.py`` keeps them in a file, so the books survive a sandbox restart as
Deriv's survive PenPay's.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

Change = dict[str, Any]  # one change of the books, as recorded and replayed (JSON-able)

LOGINID_RE = re.compile(r"^(CR|VRTC|MF)\d+$")
USER_TOKEN_PREFIX = "sandbox-user-token-"  # noqa: S105 - the sandbox's documented token shape
USER_BALANCE_CENTS = 1_000_000  # 10,000.00 USD
EMAIL_DOMAIN = "sandbox.deriv.test"

TRANSFER_REJECTED = "CR9000001"
TRANSFER_DROPPED = "CR9000002"
WITHDRAW_REJECTED = "CR9000003"
WITHDRAW_DROPPED = "CR9000004"

AGENT_SCOPES = ("read", "trade", "payments", "admin")
USER_SCOPES = ("read", "trade", "payments")


class DerivApiError(Exception):
    """An answer ``{"error": {"code", "message"}}``; ``code`` is Deriv's stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class StatementEntry:
    transaction_id: int
    action_type: str
    amount_cents: int  # signed: negative leaves the account
    balance_after_cents: int
    transaction_time: int
    longcode: str
    shortcode: str
    from_loginid: str
    to_loginid: str


@dataclass(slots=True)
class Account:
    loginid: str
    currency: str
    balance_cents: int
    email: str
    fullname: str
    is_agent: bool = False
    statement: list[StatementEntry] = field(default_factory=list)

    @property
    def is_virtual(self) -> bool:
        return self.loginid.startswith("VRTC")


@dataclass(frozen=True, slots=True)
class Transfer:
    """An executed movement: the transaction ids as each side's statement shows them."""

    debit_transaction_id: int
    credit_transaction_id: int
    debited: Account
    credited: Account


def cents_from_wire(value: object) -> int:
    """A JSON number with at most two decimals (parsed as int or Decimal) -> positive integer cents."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise DerivApiError("InputValidationFailed", "Input validation failed: amount must be a number")
    try:
        amount = Decimal(value)
        cents = amount * 100
    except InvalidOperation as exc:
        raise DerivApiError("InputValidationFailed", "Input validation failed: amount") from exc
    if not amount.is_finite() or cents != cents.to_integral_value():
        raise DerivApiError("InputValidationFailed", "Input validation failed: amount has more than 2 decimals")
    if cents <= 0:
        raise DerivApiError("InputValidationFailed", "Input validation failed: amount must be positive")
    return int(cents)


def cents_to_wire(cents: int) -> Decimal:
    """Integer cents -> a two-decimal Decimal, written on the wire as a JSON number (e.g. ``12.50``)."""
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def email_for(loginid: str) -> str:
    return f"{loginid.lower()}@{EMAIL_DOMAIN}"


class DerivBooks:
    """Every account the simulator knows, consistent across sockets (one event loop, no awaits inside)."""

    def __init__(self, *, agent_token: str, agent_loginid: str, agent_balance_cents: int) -> None:
        self.agent_token = agent_token
        self.agent = Account(
            loginid=agent_loginid,
            currency="USD",
            balance_cents=agent_balance_cents,
            email=email_for(agent_loginid),
            fullname="PenPay Payment Agent",
            is_agent=True,
        )
        self.accounts: dict[str, Account] = {agent_loginid: self.agent}
        self.verification_codes: dict[str, str] = {}
        self.recorder: Callable[[Change], None] | None = None
        self._next_transaction_id = 10_000_000_001

    def account(self, loginid: str) -> Account:
        """The account for a well-formed login id, opened (funded, USD) on first use."""
        if loginid not in self.accounts:
            if not LOGINID_RE.match(loginid):
                raise KeyError(loginid)
            self.accounts[loginid] = Account(
                loginid=loginid,
                currency="USD",
                balance_cents=USER_BALANCE_CENTS,
                email=email_for(loginid),
                fullname=f"Sandbox Customer {loginid}",
            )
        return self.accounts[loginid]

    def authorize(self, token: str) -> tuple[Account, tuple[str, ...]]:
        if token == self.agent_token:
            return self.agent, AGENT_SCOPES
        if token.startswith(USER_TOKEN_PREFIX):
            loginid = token.removeprefix(USER_TOKEN_PREFIX)
            if LOGINID_RE.match(loginid) and loginid != self.agent.loginid:
                return self.account(loginid), USER_SCOPES
        raise DerivApiError("InvalidToken", "The token is invalid.")

    def account_by_email(self, email: str) -> Account | None:
        for account in self.accounts.values():
            if account.email == email:
                return account
        local, _, domain = email.partition("@")
        if domain == EMAIL_DOMAIN and LOGINID_RE.match(local.upper()):
            return self.account(local.upper())
        return None

    def issue_verification_code(self, loginid: str) -> str:
        code = secrets.token_hex(4).upper()
        self.verification_codes[loginid] = code
        self._record({"op": "code", "loginid": loginid, "code": code})
        return code

    def consume_verification_code(self, loginid: str, code: object) -> None:
        if not isinstance(code, str) or self.verification_codes.get(loginid) != code:
            raise DerivApiError("InvalidToken", "Your token has expired or is invalid.")
        del self.verification_codes[loginid]
        self._record({"op": "code_used", "loginid": loginid})

    def fund(self, loginid: str, cents: int, *, replayed: Change | None = None) -> Account:
        account = self.account(loginid)
        parties = {"from_id": loginid, "to_id": loginid}
        entry = self._entry(account, cents, "deposit", "Sandbox funding", parties, at=replayed)
        account.balance_cents += cents
        account.statement.append(entry)
        self._record(
            {
                "op": "fund",
                "loginid": loginid,
                "cents": cents,
                "tid": entry.transaction_id,
                "at": entry.transaction_time,
            }
        )
        return account

    def move(
        self,
        *,
        debit: Account,
        credit: Account,
        cents: int,
        description: str,
        kind: str,
        replayed: Change | None = None,
    ) -> Transfer:
        """Move ``cents`` atomically (no await happens between the checks and the postings)."""
        longcode = f"{kind} from {debit.loginid} to {credit.loginid}. {description}".strip()
        parties = {"from_id": debit.loginid, "to_id": credit.loginid}
        debit_entry = self._entry(debit, -cents, "transfer", longcode, parties, at=replayed)
        credit_entry = self._entry(credit, cents, "transfer", longcode, parties, at=replayed, second=True)
        debit.balance_cents -= cents
        credit.balance_cents += cents
        debit.statement.append(debit_entry)
        credit.statement.append(credit_entry)
        self._record(
            {
                "op": "move",
                "debit": debit.loginid,
                "credit": credit.loginid,
                "cents": cents,
                "description": description,
                "kind": kind,
                "tid": debit_entry.transaction_id,
                "at": debit_entry.transaction_time,
            }
        )
        return Transfer(debit_entry.transaction_id, credit_entry.transaction_id, debit, credit)

    def replay(self, change: Change) -> None:
        """Apply a recorded change again, with the transaction ids and times it had (not recorded again)."""
        recorder, self.recorder = self.recorder, None
        try:
            self._replay(change)
        finally:
            self.recorder = recorder

    def _replay(self, change: Change) -> None:
        op = change["op"]
        if op == "fund":
            self.fund(change["loginid"], change["cents"], replayed=change)
        elif op == "move":
            self.move(
                debit=self.account(change["debit"]),
                credit=self.account(change["credit"]),
                cents=change["cents"],
                description=change["description"],
                kind=change["kind"],
                replayed=change,
            )
        elif op == "open":
            if change["agent"] != self.agent.loginid:
                raise ValueError(f"the books were opened for the agent {change['agent']}, not {self.agent.loginid}")
            self.agent.balance_cents = change["agent_balance_cents"]
        elif op == "code":
            self.verification_codes[change["loginid"]] = change["code"]
        elif op == "code_used":
            self.verification_codes.pop(change["loginid"], None)
        else:
            raise ValueError(f"unknown change {op!r}")

    def opening(self) -> Change:
        """The first record of a journal: whose books they are and what the agent started with."""
        return {"op": "open", "agent": self.agent.loginid, "agent_balance_cents": self.agent.balance_cents}

    def _record(self, change: Change) -> None:
        if self.recorder is not None:
            self.recorder(change)

    def _entry(
        self,
        account: Account,
        cents: int,
        action: str,
        longcode: str,
        parties: dict[str, str],
        *,
        at: Change | None = None,
        second: bool = False,
    ) -> StatementEntry:
        """A statement entry with the next transaction id; when replaying, the recorded id (``+ 1`` for a
        movement's second side) and time, and the id counter moved past it."""
        transaction_id = self._next_transaction_id if at is None else at["tid"] + (1 if second else 0)
        self._next_transaction_id = max(self._next_transaction_id, transaction_id + 1)
        return StatementEntry(
            transaction_id=transaction_id,
            action_type=action,
            amount_cents=cents,
            balance_after_cents=account.balance_cents + cents,
            transaction_time=int(time.time()) if at is None else at["at"],
            longcode=longcode,
            shortcode=f"PA_{action.upper()}",
            from_loginid=parties["from_id"],
            to_loginid=parties["to_id"],
        )


def statement_row(entry: StatementEntry, *, with_description: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "action_type": entry.action_type,
        "amount": cents_to_wire(entry.amount_cents),
        "app_id": None,
        "balance_after": cents_to_wire(entry.balance_after_cents),
        "contract_id": None,
        "from": {"loginid": entry.from_loginid},
        "payout": None,
        "reference_id": None,
        "to": {"loginid": entry.to_loginid},
        "transaction_id": entry.transaction_id,
        "transaction_time": entry.transaction_time,
    }
    if with_description:
        row["longcode"] = entry.longcode
        row["shortcode"] = entry.shortcode
    return row
