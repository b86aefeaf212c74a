"""The transfer executor: ``paymentagent_transfer`` / ``paymentagent_withdraw`` at most once per reference.

Deriv has no idempotency key, so PenPay makes one: our reference goes into the transfer description
(``"PenPay <reference>"``) and a Redis record says what became of it.

1. A final record answers a repeated call with the recorded result; nothing is sent again.
2. Otherwise the executor claims the reference (``in_flight``) before sending anything.
3. An ``in_flight`` record found by a later call (a drop, a crash, a restart) is settled from the agent's
   statement: found -> DONE; not found -> UNKNOWN while the attempt is younger than ``settle_after_s``; only after
   that (the old request is dead and provably never executed) is a new attempt sent under the same reference.
4. Deriv's ``RateLimit`` is refused before execution, so it is retried a few times with backoff; if still limited
   the record is released and the caller gets "unavailable" (safe to retry), never REJECTED.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from penpay.gateway.client_sessions import ClientSessions
from penpay.gateway.connection import DerivConnection
from penpay.gateway.records import (
    UNKNOWN,
    LeaseLostError,
    MoneyCall,
    MoneyResult,
    Outcome,
    Record,
    ReferenceStore,
    State,
)
from penpay.gateway.tokens import TokenVault
from penpay.gateway.wire import (
    DerivCallError,
    DerivRejectedError,
    NotSentError,
    OutcomeUnknownError,
    cents_from_wire,
    cents_to_wire,
)
from penpay.logging import get_logger

log = get_logger(__name__)

REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
STATEMENT_PAGE = 500
STATEMENT_MAX_PAGES = 20


class UnavailableError(Exception):
    """Nothing was sent to Deriv; the caller may retry with the same reference."""


class InvalidRequestError(ValueError):
    """The request is malformed."""


class ReferenceConflictError(Exception):
    """The reference was already used for a different movement of money."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FoundTransfer:
    transaction_id: int
    amount_cents: int
    transaction_time: int
    longcode: str


def description_for(reference: str) -> str:
    return f"PenPay {reference}"


def _mentions(longcode: str, reference: str) -> bool:
    return re.search(rf"PenPay {re.escape(reference)}(?![A-Za-z0-9_-])", longcode) is not None


class TransferExecutor:
    def __init__(
        self,
        *,
        connection: DerivConnection,
        sessions: ClientSessions,
        store: ReferenceStore,
        tokens: TokenVault,
        settle_after_s: float = 60.0,
        rate_limit_retries: int = 2,
        rate_limit_backoff_s: float = 0.5,
    ) -> None:
        self._connection = connection
        self._sessions = sessions
        self._store = store
        self._tokens = tokens
        self._settle_after_s = settle_after_s
        self._rate_limit_retries = rate_limit_retries
        self._rate_limit_backoff_s = rate_limit_backoff_s

    # ------------------------------------------------------------------ public
    async def transfer(self, *, reference: str, loginid: str, amount_cents: int, currency: str) -> MoneyResult:
        call = self._validated(reference, "transfer", loginid, amount_cents, currency)

        async def send() -> MoneyResult:
            answer = await self._connection.call(
                {
                    "paymentagent_transfer": 1,
                    "amount": cents_to_wire(amount_cents),
                    "currency": currency,
                    "transfer_to": loginid,
                    "description": description_for(reference),
                }
            )
            return MoneyResult(
                outcome=Outcome.DONE,
                transaction_id=int(answer["transaction_id"]),
                client_full_name=str(answer.get("client_to_full_name", "")),
            )

        return await self._execute(reference, call, send)

    async def withdraw(
        self,
        *,
        reference: str,
        loginid: str,
        encrypted_token: bytes,
        amount_cents: int,
        currency: str,
        verification_code: str,
    ) -> MoneyResult:
        call = self._validated(reference, "withdraw", loginid, amount_cents, currency)
        if not verification_code:
            raise InvalidRequestError("verification_code is required")
        token = self._tokens.decrypt(encrypted_token)

        async def send() -> MoneyResult:
            agent_loginid = self._connection.agent_loginid
            if not agent_loginid:
                raise NotSentError("the agent login id is not known yet")
            async with self._sessions.open(token, loginid=loginid) as (socket, _):
                answer = await socket.call(
                    {
                        "paymentagent_withdraw": 1,
                        "amount": cents_to_wire(amount_cents),
                        "currency": currency,
                        "paymentagent_loginid": agent_loginid,
                        "verification_code": verification_code,
                        "description": description_for(reference),
                    },
                    timeout_s=self._sessions.timeout_s,
                )
            return MoneyResult(outcome=Outcome.DONE, transaction_id=int(answer["transaction_id"]))

        return await self._execute(reference, call, send)

    async def find(self, reference: str, *, since: float | None = None) -> FoundTransfer | None:
        """Look our reference up in the agent's statement (newest first). Raises ``DerivCallError``."""
        if not REFERENCE_RE.match(reference):
            raise InvalidRequestError("malformed reference")
        request: dict[str, object] = {"statement": 1, "description": 1, "limit": STATEMENT_PAGE}
        if since is not None:
            request["date_from"] = int(since) - 24 * 3600
        for page in range(STATEMENT_MAX_PAGES):
            answer = await self._connection.call({**request, "offset": page * STATEMENT_PAGE})
            rows = answer["statement"]["transactions"]
            for row in rows:
                if _mentions(str(row.get("longcode", "")), reference):
                    return FoundTransfer(
                        transaction_id=int(row["transaction_id"]),
                        amount_cents=cents_from_wire(row["amount"]),
                        transaction_time=int(row["transaction_time"]),
                        longcode=str(row["longcode"]),
                    )
            if len(rows) < STATEMENT_PAGE:
                return None
        return None

    async def settle(self, reference: str) -> FoundTransfer | None:
        """FindTransfer: the statement's answer, also recorded as DONE when an in-flight record awaits it."""
        stored = await self._store.get(reference)
        found = await self.find(reference, since=stored[0].started_at if stored else None)
        if found is not None and stored is not None and stored[0].state is State.IN_FLIGHT:
            await self._store.complete(
                reference, stored[0], stored[1], MoneyResult(outcome=Outcome.DONE, transaction_id=found.transaction_id)
            )
        return found

    # ------------------------------------------------------------------ the at-most-once core
    async def _execute(
        self, reference: str, call: MoneyCall, send: Callable[[], Awaitable[MoneyResult]]
    ) -> MoneyResult:
        for _ in range(3):  # a lost race re-reads the record
            stored = await self._store.get(reference)
            if stored is None:
                claimed = await self._store.claim(reference, call)
                if claimed is not None:
                    return await self._send(reference, *claimed, send)
                continue
            record, raw = stored
            if record.call != call:
                raise ReferenceConflictError(f"reference {reference} was used for a different {record.call.kind}")
            if record.state is State.FINAL and record.result is not None:
                log.info("deriv.replayed", outcome=record.result.outcome)
                return record.result
            return await self._settle_in_flight(reference, record, raw, send)
        return UNKNOWN

    async def _settle_in_flight(
        self, reference: str, record: Record, raw: str, send: Callable[[], Awaitable[MoneyResult]]
    ) -> MoneyResult:
        try:
            found = await self.find(reference, since=record.started_at)
        except DerivCallError as exc:
            log.warning("deriv.settle_failed", error=str(exc))
            return UNKNOWN
        if found is not None:
            result = MoneyResult(outcome=Outcome.DONE, transaction_id=found.transaction_id)
            await self._store.complete(reference, record, raw, result)
            log.info("deriv.settled_from_statement", deriv_transaction_id=found.transaction_id)
            return result
        if time.time() - record.started_at < self._settle_after_s:
            log.info("deriv.still_unknown", attempt=record.attempt)
            return UNKNOWN
        retried = await self._store.retry(reference, record, raw)
        if retried is None:
            return UNKNOWN
        log.warning("deriv.resending_unexecuted", attempt=retried[0].attempt)
        return await self._send(reference, *retried, send)

    async def _send(
        self, reference: str, record: Record, raw: str, send: Callable[[], Awaitable[MoneyResult]]
    ) -> MoneyResult:
        for attempt in range(self._rate_limit_retries + 1):
            try:
                result = await send()
            except NotSentError as exc:
                await self._store.release(reference, raw)
                raise UnavailableError(str(exc)) from exc
            except OutcomeUnknownError as exc:
                log.error("deriv.outcome_unknown", error=str(exc), kind=record.call.kind)
                return UNKNOWN
            except DerivRejectedError as exc:
                if exc.code == "RateLimit":
                    if attempt < self._rate_limit_retries:
                        await asyncio.sleep(self._rate_limit_backoff_s * 2**attempt)
                        continue
                    await self._store.release(reference, raw)
                    raise UnavailableError("Deriv rate limit") from exc
                result = MoneyResult(
                    outcome=Outcome.REJECTED, error_code=exc.code, error_message=exc.message, refused_by=exc.call
                )
            try:
                recorded = await self._store.complete(reference, record, raw, result)
            except LeaseLostError:
                recorded = False  # the next holder settles the in-flight record from the statement
            if not recorded:
                log.error("deriv.result_not_recorded", outcome=result.outcome)
            log.info("deriv.answered", outcome=result.outcome, deriv_transaction_id=result.transaction_id)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _validated(reference: str, kind: str, loginid: str, amount_cents: int, currency: str) -> MoneyCall:
        if not REFERENCE_RE.match(reference):
            raise InvalidRequestError("reference must be 1-64 characters of [A-Za-z0-9_-]")
        if not re.match(r"^[A-Z]{2,4}\d{1,10}$", loginid):
            raise InvalidRequestError("malformed Deriv login id")
        if amount_cents <= 0:
            raise InvalidRequestError("amount_cents must be positive")
        if not re.match(r"^[A-Z]{3,4}$", currency):
            raise InvalidRequestError("malformed currency")
        return MoneyCall(kind=kind, loginid=loginid, amount_cents=amount_cents, currency=currency)
