"""Reference -> state of every money call, in Redis, written only by the lease holder.

A record is ``in_flight`` from just before the request goes to Deriv until the answer is known, then ``final``
(DONE or REJECTED, with Deriv's transaction id or error). Every write is a Lua script that first checks the lease
value (fencing): a gateway that lost its lease cannot claim, complete or release anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from penpay.gateway.lease import RedisLease
from penpay.gateway.pipelining import CommandPipeline

RECORD_TTL_MS = 90 * 24 * 3600 * 1000

_CLAIM = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""
_SWAP = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1
"""


class Outcome(StrEnum):
    DONE = "done"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class State(StrEnum):
    IN_FLIGHT = "in_flight"
    FINAL = "final"


class LeaseLostError(Exception):
    """This gateway no longer holds the lease: it must not touch money."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MoneyCall:
    """What a reference was used for; a repeated call must ask for exactly the same thing."""

    kind: str  # "transfer" | "withdraw"
    loginid: str
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MoneyResult:
    outcome: Outcome
    transaction_id: int = 0
    error_code: str = ""
    error_message: str = ""
    client_full_name: str = ""
    refused_by: str = ""  # REJECTED: the Deriv call that refused (``DerivRejectedError.call``)


UNKNOWN = MoneyResult(outcome=Outcome.UNKNOWN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    call: MoneyCall
    state: State
    started_at: float  # epoch seconds of the current attempt
    fencing_token: int
    attempt: int = 1
    result: MoneyResult | None = field(default=None)

    def encode(self) -> str:
        """Canonical JSON (sorted keys, compact): the swap script compares a stored record with this text, so it
        must be what ``json.dumps(dataclasses.asdict(self), sort_keys=True)`` writes, but for ``refused_by``, which
        is written only when it names a call (a refusal): a gateway from before the field, run again after a
        rollback, then still reads every other record. Built by hand because ``asdict`` deep-copies every value, a
        tenth of the gateway's CPU per transfer (tests pin the equality)."""
        call, result = self.call, self.result
        data: dict[str, Any] = {
            "call": {
                "kind": call.kind,
                "loginid": call.loginid,
                "amount_cents": call.amount_cents,
                "currency": call.currency,
            },
            "state": self.state,
            "started_at": self.started_at,
            "fencing_token": self.fencing_token,
            "attempt": self.attempt,
            "result": None
            if result is None
            else {
                "outcome": result.outcome,
                "transaction_id": result.transaction_id,
                "error_code": result.error_code,
                "error_message": result.error_message,
                "client_full_name": result.client_full_name,
            },
        }
        if result is not None and result.refused_by:
            data["result"]["refused_by"] = result.refused_by
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Record:
        """A stored record; a result field this code does not know (written by a newer gateway, read by this one
        after a rollback) is left out, one it knows but the record lacks (an older gateway's) takes its default."""
        data = json.loads(raw)
        result = data.get("result")
        return cls(
            call=MoneyCall(**data["call"]),
            state=State(data["state"]),
            started_at=float(data["started_at"]),
            fencing_token=int(data["fencing_token"]),
            attempt=int(data["attempt"]),
            result=None if result is None else _result(result),
        )


_RESULT_FIELDS = frozenset(f.name for f in fields(MoneyResult))


def _result(data: dict[str, Any]) -> MoneyResult:
    known = {k: v for k, v in data.items() if k in _RESULT_FIELDS}
    return MoneyResult(**{**known, "outcome": Outcome(data["outcome"])})


class ReferenceStore:
    """The records, read and written through one :class:`CommandPipeline`: a batch's transfers read, claim and
    complete their records together."""

    def __init__(self, redis: Redis, *, key_prefix: str, lease: RedisLease) -> None:
        self._redis = CommandPipeline(redis)
        self._prefix = key_prefix
        self._lease = lease

    def key(self, reference: str) -> str:
        return f"{self._prefix}:deriv:ref:{reference}"

    async def get(self, reference: str) -> tuple[Record, str] | None:
        raw = await self._redis.execute("GET", self.key(reference))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return Record.decode(text), text

    async def claim(self, reference: str, call: MoneyCall) -> tuple[Record, str] | None:
        """Record ``in_flight`` if no record exists yet; ``None`` if another record is already there."""
        record = Record(
            call=call, state=State.IN_FLIGHT, started_at=time.time(), fencing_token=self._lease.fencing_token
        )
        raw = record.encode()
        done = await self._eval(_CLAIM, reference, raw, RECORD_TTL_MS)
        return (record, raw) if done == 1 else None

    async def retry(self, reference: str, record: Record, raw: str) -> tuple[Record, str] | None:
        """Start a new attempt of an in-flight record that Deriv's statement proves never executed."""
        fresh = replace(
            record, started_at=time.time(), fencing_token=self._lease.fencing_token, attempt=record.attempt + 1
        )
        fresh_raw = fresh.encode()
        done = await self._eval(_SWAP, reference, raw, fresh_raw, RECORD_TTL_MS)
        return (fresh, fresh_raw) if done == 1 else None

    async def complete(self, reference: str, record: Record, raw: str, result: MoneyResult) -> bool:
        final = replace(record, state=State.FINAL, result=result).encode()
        return await self._eval(_SWAP, reference, raw, final, RECORD_TTL_MS) == 1

    async def release(self, reference: str, raw: str) -> bool:
        """Forget an in-flight record whose request provably never reached Deriv."""
        return await self._eval(_SWAP, reference, raw, "", 0) == 1

    async def _eval(self, script: str, reference: str, *args: str | int) -> int:
        if not self._lease.is_held():
            raise LeaseLostError("the gateway lease is not held")
        key, lease = self.key(reference), self._lease
        result = int(await self._redis.execute("EVAL", script, 2, key, lease.key, lease.value, *args))
        if result == -1:
            raise LeaseLostError("the gateway lease changed hands")
        return result
