"""Deposits that arrive together are created in one batch (one database transaction) with every rule of the
one-request path kept member by member: keys, limits, the float, and what each key answers afterwards."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from penpay.adapters.db.batch_initiation import SqlInitiationBatch
from penpay.adapters.db.tables import audit_log, idempotency_keys, ledger_entries, outbox, transactions
from penpay.adapters.tokens import SecretBox
from penpay.bootstrap import Database, SystemClock
from penpay.settings import Settings
from penpay_domain import ledger
from penpay_domain.errors import InsufficientFunds
from penpay_domain.ids import IdempotencyKey, UserId
from penpay_domain.money import Currency, Money
from penpay_domain.transaction import Kind
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user
from tests.integration.audit_helpers import pending_subjects

pytestmark = pytest.mark.integration

DEPOSIT = {"amount_kes": 1_000, "msisdn": "0712 345 678", "deriv_loginid": "cr1234567"}


async def _agent(db: Database) -> ledger.Account:
    async with db.uow() as uow:
        return await uow.ledger.account(ledger.DERIV_AGENT.code)


async def _post(api: Api, user: str, key: str, body: dict[str, object]) -> httpx.Response:
    return await api.client.post("/deposit", json=body, headers=api.auth(user, **{"Idempotency-Key": key}))


async def test_a_burst_is_created_whole_with_its_ledger_legs_outbox_and_audit_rows(api: Api, db: Database) -> None:
    before = await _agent(db)
    users = [new_user() for _ in range(40)]
    responses = await asyncio.gather(*(_post(api, u, new_key(), DEPOSIT) for u in users))

    assert [r.status_code for r in responses] == [202] * 40
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 40
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(transactions.c.id, transactions.c.amount_usd).where(transactions.c.id.in_(ids))
            )
        ).all()
        entries = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(ledger_entries)
            .where(ledger_entries.c.transfer_id.in_([f"{i}:{leg}" for i in ids for leg in ("kes", "usd")]))
        )
        events = (
            await conn.execute(
                sa.select(outbox.c.transaction_id, outbox.c.event_type).where(outbox.c.transaction_id.in_(ids))
            )
        ).all()
        subjects = [*ids, *(f"{i}:{leg}" for i in ids for leg in ("kes", "usd"))]
        # the worker's auditor may have chained some already
        audited = len(await pending_subjects(conn, set(subjects)))
        found = await conn.scalar(
            sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.subject.in_(subjects))
        )
        audited += int(found or 0)
    assert len(rows) == 40
    assert entries == 40 * 2 * 2  # two pending legs a deposit, a debit and a credit each
    assert sorted(e.transaction_id for e in events) == sorted(ids)
    assert {e.event_type for e in events} == {"deposit.requested"}
    assert audited == 40 * 3  # the event and the two ledger legs of each deposit
    reserved = (await _agent(db)).credits_pending - before.credits_pending
    assert reserved >= sum(int(r.amount_usd) for r in rows)  # other tests may reserve concurrently, never less


async def test_one_key_twice_in_a_burst_creates_one_deposit_and_replays_it(api: Api, db: Database) -> None:
    user, key = new_user(), new_key()
    first, second = await asyncio.gather(_post(api, user, key, DEPOSIT), _post(api, user, key, DEPOSIT))

    assert first.status_code == second.status_code == 202
    assert first.content == second.content
    assert "true" in (first.headers.get("idempotent-replayed"), second.headers.get("idempotent-replayed"))
    async with db.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(transactions).where(transactions.c.user_id == user)
        )
    assert count == 1


async def test_members_refused_by_a_rule_keep_their_answer_and_the_rest_go_through(api: Api, db: Database) -> None:
    small_key, ok_key = new_key(), new_key()
    user = new_user()
    small, ok = await asyncio.gather(
        _post(api, user, small_key, {**DEPOSIT, "amount_kes": 5}), _post(api, user, ok_key, DEPOSIT)
    )
    assert small.status_code == 422 and small.json()["code"] == "amount_out_of_range"
    assert ok.status_code == 202

    again = await _post(api, user, small_key, {**DEPOSIT, "amount_kes": 5})
    assert again.status_code == 422 and again.content == small.content
    assert again.headers["idempotent-replayed"] == "true"
    async with db.engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.select(idempotency_keys.c.status_code, idempotency_keys.c.transaction_id)
                .where(idempotency_keys.c.user_id == user)
                .order_by(idempotency_keys.c.status_code)
            )
        ).all()
    assert [(s.status_code, s.transaction_id is None) for s in stored] == [(202, False), (422, True)]


async def test_the_float_refuses_only_the_members_it_cannot_cover(make_api: MakeApi, db: Database) -> None:
    api = await make_api(deposit_max_kes=10**13, daily_limit_kes=10**14)
    before = await _agent(db)
    too_much = int(Decimal(before.available.minor + 100_00) / 100 * Decimal("132")) + 1
    keys = [new_key() for _ in range(4)]
    responses = await asyncio.gather(
        _post(api, new_user(), keys[0], DEPOSIT),
        _post(api, new_user(), keys[1], {**DEPOSIT, "amount_kes": too_much}),
        _post(api, new_user(), keys[2], DEPOSIT),
        _post(api, new_user(), keys[3], DEPOSIT),
    )
    assert [r.status_code for r in responses] == [202, 503, 202, 202]
    assert responses[1].json()["code"] == "float_unavailable"
    async with db.engine.connect() as conn:
        refused_key = await conn.scalar(
            sa.select(sa.func.count()).select_from(idempotency_keys).where(idempotency_keys.c.idem_key == keys[1])
        )
    assert refused_key == 0  # a failure on our side leaves the key free for a retry


async def test_a_float_spent_meanwhile_refuses_the_whole_write(db: Database) -> None:
    """The batch decided on a snapshot; if the float is gone by the write, the counters' CHECK constraint refuses it
    and the store says ``InsufficientFunds`` (the intake then runs the batch again with the accounts locked)."""
    user = UserId(new_user())
    async with SqlInitiationBatch(db.engine, SystemClock(), SecretBox.from_settings(Settings())) as store:
        now = store.now
        reads = await store.read(
            kind=Kind.DEPOSIT,
            keys=[IdempotencyKey(user, new_key())],
            users=[user],
            window=(now - timedelta(days=1), now),
            codes=[ledger.DERIV_AGENT.code],
        )
        agent = reads.accounts[ledger.DERIV_AGENT.code]
        overdrawn = replace(agent, credits_pending=agent.debits_posted - agent.credits_posted + 1)
        with pytest.raises(InsufficientFunds) as caught:
            await store.write(created=[], before=reads.accounts, after={agent.code: overdrawn}, answers=[])
    assert caught.value.details.get("account") == ledger.DERIV_AGENT.code
    assert await _agent(db) == agent  # nothing was written
    assert reads.taken == set() and reads.volumes == {} and reads.linked == set()


async def test_a_key_is_taken_only_for_the_user_who_used_it(api: Api, db: Database) -> None:
    """A batch reads exactly its (user, key) pairs: a user's own earlier key is taken, the same key of another user
    and another key of the same user are not."""
    alice, bob = new_user(), new_user()
    used = [new_key() for _ in range(3)]
    for key in used:
        assert (await _post(api, alice, key, DEPOSIT)).status_code == 202
    fresh = new_key()
    asked = [
        IdempotencyKey(UserId(alice), used[0]),
        IdempotencyKey(UserId(alice), used[2]),
        IdempotencyKey(UserId(alice), fresh),
        IdempotencyKey(UserId(bob), used[1]),
    ]
    async with SqlInitiationBatch(db.engine, SystemClock(), SecretBox.from_settings(Settings())) as store:
        now = store.now
        reads = await store.read(
            kind=Kind.DEPOSIT,
            keys=asked,
            users=sorted({UserId(alice), UserId(bob)}),
            window=(now - timedelta(days=1), now),
            codes=[],
        )
    assert reads.taken == {asked[0], asked[1]}
    assert reads.volumes == {UserId(alice): Money(3 * 1_000, Currency.KES)}  # DEPOSIT's amount, three times
