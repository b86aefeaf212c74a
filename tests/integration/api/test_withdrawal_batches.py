"""Withdrawals that arrive together are created in one batch, as deposits are, with every rule of the one-request path
kept member by member: the linked account, the gross day limit, the B2C float, the code kept encrypted per member."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa

from penpay.adapters.db.tables import idempotency_keys, outbox, transactions, withdrawal_codes
from penpay.bootstrap import Database
from penpay.service_layer.intake import IntakeUnitOfWork
from penpay_domain.ids import TransactionId
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user
from tests.integration.api.test_withdrawals import WITHDRAW, _b2c, _link

pytestmark = pytest.mark.integration


async def _post(api: Api, user: str, key: str, **body: object) -> httpx.Response:
    return await api.client.post(
        "/withdraw", json={**WITHDRAW, **body}, headers=api.auth(user, **{"Idempotency-Key": key})
    )


async def test_a_burst_is_created_whole_each_with_its_own_code_and_reservation(
    api: Api, db: Database, intake_uow: IntakeUnitOfWork
) -> None:
    users = [new_user() for _ in range(12)]
    for user in users:
        await _link(api, user)
    before = await _b2c(db)
    responses = await asyncio.gather(
        *(_post(api, u, new_key(), verification_code=f"code{i:04d}") for i, u in enumerate(users))
    )

    assert [r.status_code for r in responses] == [202] * 12, [r.text for r in responses]
    ids = [r.json()["id"] for r in responses]
    async with db.engine.connect() as conn:
        kinds = (await conn.execute(sa.select(transactions.c.kind).where(transactions.c.id.in_(ids)))).scalars().all()
        events = (
            (await conn.execute(sa.select(outbox.c.event_type).where(outbox.c.transaction_id.in_(ids)))).scalars().all()
        )
        ciphertexts = (
            (
                await conn.execute(
                    sa.select(withdrawal_codes.c.code_ciphertext).where(withdrawal_codes.c.transaction_id.in_(ids))
                )
            )
            .scalars()
            .all()
        )
    assert kinds == ["withdrawal"] * 12
    assert sorted(events) == ["withdrawal.requested"] * 12
    assert len(ciphertexts) == 12 and not any(b"code" in bytes(c) for c in ciphertexts)  # encrypted at rest
    async with intake_uow as uow:
        codes = await uow.withdrawal_codes.take_many([TransactionId(i) for i in ids])
        await uow.commit()
    assert [codes[TransactionId(i)] for i in ids] == [f"code{n:04d}" for n in range(12)]  # each its own
    reserved = (await _b2c(db)).credits_pending - before.credits_pending
    assert reserved >= sum(r.json()["amount_kes"] for r in responses)  # other tests may reserve too, never less


async def test_members_refused_by_a_rule_keep_their_answer_and_the_rest_go_through(
    make_api: MakeApi, db: Database
) -> None:
    api = await make_api(
        daily_limit_kes=2_000, deposit_max_kes=2_000, withdraw_max_kes=2_000
    )  # one 12.50 USD withdrawal (1,594 KES gross) a day, not two
    linked, twice, stranger = new_user(), new_user(), new_user()
    await _link(api, linked)
    await _link(api, twice)
    keys = [new_key() for _ in range(4)]
    responses = await asyncio.gather(
        _post(api, linked, keys[0]),
        _post(api, stranger, keys[1]),  # the login id is linked, but not by this user
        _post(api, twice, keys[2]),
        _post(api, twice, keys[3]),
    )

    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [202, 403] and sorted(statuses[2:]) == [202, 422]
    assert responses[1].json()["code"] == "deriv_account_not_linked"
    assert next(r for r in responses[2:] if r.status_code == 422).json()["code"] == "limit_exceeded"
    async with db.engine.connect() as conn:
        stored = dict(
            (
                await conn.execute(
                    sa.select(idempotency_keys.c.idem_key, idempotency_keys.c.status_code).where(
                        idempotency_keys.c.idem_key.in_(keys)
                    )
                )
            ).all()
        )
    assert stored == {k: r.status_code for k, r in zip(keys, responses, strict=True)}  # every rule's answer is kept
    replay = await _post(api, stranger, keys[1])
    assert replay.status_code == 403 and replay.headers.get("idempotent-replayed") == "true"


async def test_the_b2c_float_refuses_only_the_members_it_cannot_cover(make_api: MakeApi, db: Database) -> None:
    api = await make_api(withdraw_max_kes=10**13, daily_limit_kes=10**14)
    users = [new_user() for _ in range(3)]
    for user in users:
        await _link(api, user)
    b2c = await _b2c(db)
    too_much = f"{(b2c.available.minor + 10_000) / 127:.2f}"
    responses = await asyncio.gather(
        _post(api, users[0], new_key()),
        _post(api, users[1], new_key(), amount_usd=too_much),
        _post(api, users[2], new_key()),
    )
    assert [r.status_code for r in responses] == [202, 503, 202]
    assert responses[1].json()["code"] == "float_unavailable"
    reserved = (await _b2c(db)).credits_pending - b2c.credits_pending
    assert reserved == responses[0].json()["amount_kes"] + responses[2].json()["amount_kes"]  # the refused one: none
