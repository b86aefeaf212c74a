"""Overload: a deposit still waiting ``PENPAY_INTAKE_QUEUE_DEADLINE_MS`` after it arrived, queued behind batches the
database holds up, is answered 503 ``overloaded`` with ``Retry-After``, having changed nothing, and its retry with the
same key is a first try. The database is held up for real: a row lock on a user's limit row, which every batch of
that user takes."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa

from penpay.adapters.db.tables import idempotency_keys, transactions
from penpay.bootstrap import Database
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user

DEPOSIT = {"amount_kes": 1_000, "msisdn": "0712 345 678", "deriv_loginid": "cr1234567"}
DEADLINE_MS = 300
SETTLE_S = 1.0  # long against what a request takes to reach its batch, even on a loaded CI machine


async def _post(api: Api, user: str, key: str) -> httpx.Response:
    return await api.client.post("/deposit", json=DEPOSIT, headers=api.auth(user, **{"Idempotency-Key": key}))


async def _rows(db: Database, user: str) -> tuple[int, int]:
    """The user's transactions and idempotency keys."""
    async with db.engine.connect() as conn:
        txns = await conn.scalar(
            sa.select(sa.func.count()).select_from(transactions).where(transactions.c.user_id == user)
        )
        keys = await conn.scalar(
            sa.select(sa.func.count()).select_from(idempotency_keys).where(idempotency_keys.c.user_id == user)
        )
    return int(txns or 0), int(keys or 0)


async def test_a_request_queued_past_the_deadline_is_refused_untouched_and_its_retry_goes_through(
    make_api: MakeApi, db: Database
) -> None:
    api = await make_api(intake_queue_deadline_ms=DEADLINE_MS, intake_max_in_flight=2)
    slow_user, late_user, late_key = new_user(), new_user(), new_key()
    async with db.engine.connect() as holder:  # the first two batches wait for this lock
        await holder.execute(
            sa.text("INSERT INTO user_limits (user_id, locked_at) VALUES (:u, NOW(6))"), {"u": slow_user}
        )
        first = asyncio.create_task(_post(api, slow_user, new_key()))
        await asyncio.sleep(SETTLE_S)  # its batch in flight, blocked (apart, or the two would share one batch)
        second = asyncio.create_task(_post(api, slow_user, new_key()))
        await asyncio.sleep(SETTLE_S)  # the second batch too
        late = asyncio.create_task(_post(api, late_user, late_key))
        await asyncio.sleep(2 * DEADLINE_MS / 1000)  # the third waits in the queue past its deadline
        assert not late.done()
        await holder.rollback()
    refused = await late
    assert [(await first).status_code, (await second).status_code] == [202, 202]
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["Retry-After"] == "1"
    problem = refused.json()
    assert problem["code"] == "overloaded" and "retry" in problem["detail"]
    assert await _rows(db, late_user) == (0, 0)  # nothing of it was written, not even its key

    retry = await _post(api, late_user, late_key)
    assert retry.status_code == 202, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert await _rows(db, late_user) == (1, 1)


async def test_requests_within_the_deadline_are_never_refused(make_api: MakeApi) -> None:
    api = await make_api(intake_queue_deadline_ms=2_000)
    answers = await asyncio.gather(*(_post(api, new_user(), new_key()) for _ in range(40)))
    assert {a.status_code for a in answers} == {202}
