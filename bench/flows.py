"""Money flows through the public API, and watching them finish in the database.

Deposits spread over many users (``users``) so that neither the per-user row lock nor the daily limit shapes the
figures; each request carries its own ``Idempotency-Key``. Withdrawals need a linked Deriv account and a fresh e-mailed
verification code each, so :func:`prepare_withdrawals` links one sandbox account per withdrawal and fetches its code
from the sandbox control API before the timed part starts, as the e2e tests do.

Completion is read from the ``transactions`` table: a transaction's completion time is ``updated_at - created_at``
(both written by PenPay: at the ``POST`` and at the final transition), so the poll interval does not blur it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.http import HttpPool
from bench.load import percentiles_ms

DEPOSIT_TERMINAL = frozenset({"COMPLETED", "PAYMENT_FAILED", "REFUNDED", "NEEDS_REVIEW"})
WITHDRAWAL_TERMINAL = frozenset({"COMPLETED", "FAILED", "REVERSED", "NEEDS_REVIEW"})
TERMINAL = DEPOSIT_TERMINAL | WITHDRAWAL_TERMINAL
CONTROL_TIMEOUT_S = 15.0
DEPOSIT_KES = 100
WITHDRAW_USD = "1.00"

Mint = Callable[[str], str]


def msisdn(i: int) -> str:
    """An ordinary, paying customer's number (never one of the sandbox's special identities 2547000000xx)."""
    return f"2547{12_000_000 + i % 87_000_000:08d}"


class Deposits:
    """Pre-built ``POST /deposit`` requests for ``users`` users (tokens minted once)."""

    def __init__(self, pool: HttpPool, mint: Mint, *, users: int, tag: str) -> None:
        self._pool = pool
        self._tokens = [mint(f"bench-{tag}-u{i}") for i in range(users)]
        self._tag = tag
        # each phase its own phone numbers: Daraja (and the sandbox) refuse a second push to a phone whose prompt
        # is still open, and deposits of an earlier phase may still be in flight
        self._phones = int(hashlib.sha256(tag.encode()).hexdigest(), 16) % 80_000_000

    def request(self, i: int) -> bytes:
        body = json.dumps(
            {
                "amount_kes": DEPOSIT_KES,
                "msisdn": msisdn(self._phones + i),
                "deriv_loginid": f"CR{1_000_000 + i % 8_000_000}",
            }
        ).encode()
        headers = {
            "Authorization": "Bearer " + self._tokens[i % len(self._tokens)],
            "Idempotency-Key": f"{self._tag}-{i}-{uuid.uuid4().hex[:12]}",
            "Content-Type": "application/json",
        }
        return self._pool.build("POST", "/deposit", headers, body)


@dataclass(slots=True)
class PreparedWithdrawal:
    token: str
    loginid: str
    code: str


async def prepare_withdrawals(
    api: str, control: str, mint: Mint, *, count: int, tag: str, concurrency: int = 16
) -> list[PreparedWithdrawal]:
    """One user per withdrawal: link a fresh sandbox Deriv account, ask for a code, read it from the sandbox."""
    base = 5_000_000 + int(uuid.uuid4().int % 2_000_000)  # clear of the special CR90000xx identities
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=CONTROL_TIMEOUT_S, limits=limits) as client:

        async def one(i: int) -> PreparedWithdrawal:
            loginid = f"CR{base + i}"
            token = mint(f"bench-{tag}-w{i}")
            auth = {"Authorization": f"Bearer {token}"}
            async with gate:
                linked = await client.post(
                    f"{api}/deriv/link", json={"token": f"sandbox-user-token-{loginid}"}, headers=auth
                )
                if linked.status_code not in (200, 201):
                    raise RuntimeError(f"linking {loginid} failed: HTTP {linked.status_code} {linked.text[:200]}")
                asked = await client.post(f"{api}/withdraw/code", json={"deriv_loginid": loginid}, headers=auth)
                if asked.status_code not in (200, 202):
                    raise RuntimeError(
                        f"asking a code for {loginid} failed: HTTP {asked.status_code} {asked.text[:200]}"
                    )
                got = await client.get(f"{control}/deriv/verification-codes/{loginid}")
                if got.status_code != 200:
                    raise RuntimeError(f"the sandbox has no code for {loginid}: HTTP {got.status_code}")
                return PreparedWithdrawal(token=token, loginid=loginid, code=str(got.json()["code"]))

        return list(await asyncio.gather(*(one(i) for i in range(count))))


class Withdrawals:
    """``POST /withdraw`` requests, one per prepared account (request ``i`` uses account ``i``)."""

    def __init__(self, pool: HttpPool, prepared: Sequence[PreparedWithdrawal], *, tag: str) -> None:
        self._pool = pool
        self._prepared = prepared
        self._tag = tag

    def request(self, i: int) -> bytes:
        p = self._prepared[i % len(self._prepared)]
        body = json.dumps(
            {"amount_usd": WITHDRAW_USD, "msisdn": msisdn(i), "deriv_loginid": p.loginid, "verification_code": p.code}
        ).encode()
        headers = {
            "Authorization": f"Bearer {p.token}",
            "Idempotency-Key": f"{self._tag}-w{i}",
            "Content-Type": "application/json",
        }
        return self._pool.build("POST", "/withdraw", headers, body)


@dataclass(slots=True)
class Completion:
    """How a set of transactions ended: counts by status, completion times, completions per second."""

    total: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    completion_s: list[float] = field(default_factory=list)  # COMPLETED only: updated_at - created_at
    span_s: float = 0.0  # first created_at -> last COMPLETED updated_at
    peak_5s_per_s: float = 0.0  # the most completions in any 5 s window, per second (diagnostic: without the tail)
    waited_s: float = 0.0  # how long the harness waited for them all to reach a terminal state
    all_terminal: bool = False

    @property
    def completed(self) -> int:
        return self.statuses.get("COMPLETED", 0)

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.span_s if self.span_s > 0 else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "transactions": self.total,
            "completed": self.completed,
            "statuses": dict(sorted(self.statuses.items())),
            "completed_per_s": round(self.completed_per_s, 1),
            "peak_5s_completed_per_s": round(self.peak_5s_per_s, 1),
            "span_s": round(self.span_s, 3),
            "waited_s": round(self.waited_s, 1),
            "all_terminal": self.all_terminal,
            "completion_ms": percentiles_ms(self.completion_s),
        }


async def _rows(engine: AsyncEngine, ids: Sequence[str]) -> list[tuple[str, datetime, datetime]]:
    out: list[tuple[str, datetime, datetime]] = []
    async with engine.connect() as conn:
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            stmt = sa.text("SELECT status, created_at, updated_at FROM transactions WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            )
            rows = (await conn.execute(stmt, {"ids": chunk})).all()
            out.extend((str(r[0]), r[1], r[2]) for r in rows)
    return out


async def wait_terminal(
    engine: AsyncEngine, ids: Sequence[str], *, timeout_s: float, poll_s: float = 0.5
) -> Completion:
    """Poll until every transaction in ``ids`` is terminal (or ``timeout_s``), then summarise them."""
    started = time.monotonic()
    rows: list[tuple[str, datetime, datetime]] = []
    while True:
        rows = await _rows(engine, ids)
        done = sum(1 for status, _, _ in rows if status in TERMINAL)
        if done == len(ids) or time.monotonic() - started > timeout_s:
            break
        await asyncio.sleep(poll_s)
    result = Completion(total=len(ids), waited_s=time.monotonic() - started)
    result.statuses.update(status for status, _, _ in rows)
    result.all_terminal = len(rows) == len(ids) and all(status in TERMINAL for status, _, _ in rows)
    completed = [(created, updated) for status, created, updated in rows if status == "COMPLETED"]
    result.completion_s = [(updated - created).total_seconds() for created, updated in completed]
    if completed:
        first = min(created for _, created, _ in rows)
        last = max(updated for _, updated in completed)
        result.span_s = (last - first).total_seconds()
        result.peak_5s_per_s = peak_rate(sorted(updated for _, updated in completed), window_s=5.0)
    return result


def peak_rate(moments: Sequence[datetime], *, window_s: float) -> float:
    """The most events in any window of ``window_s`` (or the whole span, if shorter), per second."""
    if not moments:
        return 0.0
    window = min(window_s, max((moments[-1] - moments[0]).total_seconds(), 0.001))
    best, lo = 0, 0
    for hi, moment in enumerate(moments):
        while (moment - moments[lo]).total_seconds() > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


async def database_state(engine: AsyncEngine) -> dict[str, Any]:
    """Every transaction of the database by status, and whether all of them are terminal."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT status, COUNT(*) FROM transactions GROUP BY status"))).all()
    statuses = {str(r[0]): int(r[1]) for r in rows}
    return {"statuses": statuses, "all_terminal": all(s in TERMINAL for s in statuses)}


async def wait_quiet(
    engine: AsyncEngine, *, timeout_s: float, settle_s: float = 2.0, poll_s: float = 0.5
) -> dict[str, Any]:
    """Poll until every transaction in the database is terminal and no new one appeared for ``settle_s``.

    Requests that the load generator gave up on (an open-loop request not answered in time) may still be queued in
    the API and create deposits after the phase: without this wait they would be the next phase's hidden backlog.
    """
    started = time.monotonic()
    last_total, stable_since = -1, time.monotonic()
    state: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        state = await database_state(engine)
        total = sum(state["statuses"].values())
        if total != last_total:
            last_total, stable_since = total, time.monotonic()
        elif state["all_terminal"] and time.monotonic() - stable_since >= settle_s:
            break
        await asyncio.sleep(poll_s)
    return {**state, "transactions": last_total, "waited_s": round(time.monotonic() - started, 1)}
