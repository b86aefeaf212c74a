"""POST /deposit: the contract's fields and statuses, idempotency (Stripe semantics), limits under concurrency,
the Deriv float, rate limits and body rules."""

from __future__ import annotations

import asyncio
import json
import secrets
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from penpay.adapters.db.tables import outbox
from penpay.bootstrap import Database
from penpay_domain import ledger
from penpay_domain.ids import IdempotencyKey, UserId
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user, stream_fields

pytestmark = pytest.mark.integration

TRANSACTION_FIELDS = [
    "id",
    "kind",
    "status",
    "amount_kes",
    "amount_usd",
    "fx_rate",
    "fee",
    "msisdn",
    "deriv_loginid",
    "mpesa_receipt",
    "deriv_transaction_id",
    "failure_reason",
    "created_at",
    "updated_at",
]
DEPOSIT = {"amount_kes": 1_000, "msisdn": "0712 345 678", "deriv_loginid": "cr1234567"}


async def _agent(db: Database) -> ledger.Account:
    async with db.uow() as uow:
        return await uow.ledger.account(ledger.DERIV_AGENT.code)


def _problem(response: object, status: int, code: str) -> dict[str, object]:
    import httpx  # noqa: PLC0415

    assert isinstance(response, httpx.Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert {"type", "title", "detail"} <= set(body)
    return dict(body)


class TestCreateDeposit:
    async def test_a_deposit_is_accepted_with_the_contract_fields_and_reserves_the_float(
        self, api: Api, db: Database
    ) -> None:
        before = await _agent(db)
        response = await api.client.post(
            "/deposit", json=DEPOSIT, headers=api.auth(new_user(), **{"Idempotency-Key": new_key()})
        )

        assert response.status_code == 202, response.text
        body = response.json()
        assert list(body) == TRANSACTION_FIELDS
        assert body["kind"] == "deposit" and body["status"] == "PENDING"
        assert body["amount_kes"] == 1_000 and body["fee"] == 0
        assert body["msisdn"] == "254712345678" and body["deriv_loginid"] == "CR1234567"
        assert body["fx_rate"] == "131.442500"  # 129.50 * 1.015, rounded up against the customer
        assert body["amount_usd"] == "7.60"  # 1000 / 131.4425 = 7.6078 -> floored to cents
        assert body["created_at"].endswith("Z") and body["mpesa_receipt"] is None
        after = await _agent(db)
        assert after.credits_pending - before.credits_pending == 760
        async with db.engine.connect() as conn:
            types = (
                (await conn.execute(sa.select(outbox.c.event_type).where(outbox.c.transaction_id == body["id"])))
                .scalars()
                .all()
            )
        assert types == ["deposit.requested"]

    async def test_the_event_is_published_to_the_deposits_stream(self, api: Api, redis_client: aioredis.Redis) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        txn_id = (await api.client.post("/deposit", json=DEPOSIT, headers=headers)).json()["id"]
        entries = await stream_fields(redis_client, f"{api.settings.stream_prefix}:deposits")
        assert any(fields[b"transaction_id"] == txn_id.encode() for fields in entries)

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({**DEPOSIT, "extra": 1}, "validation_error"),
            ({**DEPOSIT, "amount_kes": "1000"}, "validation_error"),
            ({**DEPOSIT, "amount_kes": 1000.0}, "validation_error"),
            ({"amount_kes": 1000, "msisdn": "0712345678"}, "validation_error"),
            ({**DEPOSIT, "amount_kes": 5}, "amount_out_of_range"),
            ({**DEPOSIT, "amount_kes": 250_001}, "amount_out_of_range"),
            ({**DEPOSIT, "msisdn": "0812345678"}, "invalid_msisdn"),
            ({**DEPOSIT, "deriv_loginid": "XX12"}, "invalid_deriv_loginid"),
        ],
    )
    async def test_invalid_requests_are_422_problems(self, api: Api, body: dict[str, object], code: str) -> None:
        response = await api.client.post(
            "/deposit", json=body, headers=api.auth(new_user(), **{"Idempotency-Key": new_key()})
        )
        problem = _problem(response, 422, code)
        if code == "validation_error":
            assert problem["errors"]

    async def test_a_single_bad_field_is_answered_with_its_own_code_and_reason(self, api: Api) -> None:
        response = await api.client.post(
            "/deposit",
            json={**DEPOSIT, "msisdn": "2547"},
            headers=api.auth(new_user(), **{"Idempotency-Key": new_key()}),
        )
        problem = _problem(response, 422, "invalid_msisdn")
        assert (
            problem["detail"] == "'2547' has 1 digit after the prefix; a Kenyan mobile number has 9 (e.g. 0712345678)"
        )
        assert "errors" not in problem

    async def test_every_bad_field_of_a_body_is_named_in_one_answer(self, api: Api) -> None:
        user = new_user()
        response = await api.client.post(
            "/deposit",
            json={"amount_kes": 15.5, "msisdn": "0712 34", "deriv_loginid": "XX12"},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        problem = _problem(response, 422, "validation_error")
        errors = {e["field"]: e for e in problem["errors"]}  # type: ignore[attr-defined]
        assert set(errors) == {"amount_kes", "msisdn", "deriv_loginid"}
        assert errors["amount_kes"]["type"] == "int_type"
        assert errors["msisdn"]["type"] == "invalid_msisdn"
        assert errors["msisdn"]["msg"] == (
            "'0712 34' has 5 digits after the prefix; a Kenyan mobile number has 9 (e.g. 0712345678)"
        )
        assert errors["deriv_loginid"]["type"] == "invalid_deriv_loginid"
        assert all(set(e) == {"loc", "field", "msg", "type"} for e in errors.values())  # no ctx, no input
        listed = await api.client.get("/transactions", headers=api.auth(user))
        assert listed.json()["items"] == []

    async def test_an_amount_out_of_range_is_named_beside_the_other_bad_fields(self, api: Api) -> None:
        """The deployment's range is checked with the schema, so one answer names every fault."""
        response = await api.client.post(
            "/deposit",
            json={**DEPOSIT, "amount_kes": 5, "msisdn": "0812345678"},
            headers=api.auth(new_user(), **{"Idempotency-Key": new_key()}),
        )
        problem = _problem(response, 422, "validation_error")
        errors = {e["field"]: e for e in problem["errors"]}  # type: ignore[attr-defined]
        assert set(errors) == {"amount_kes", "msisdn"}
        assert errors["amount_kes"]["type"] == "amount_out_of_range"
        low, high = api.settings.deposit_min_kes, api.settings.deposit_max_kes
        assert errors["amount_kes"]["msg"] == f"amount 5 KES is outside the allowed range {low}..{high} KES"
        assert errors["msisdn"]["type"] == "invalid_msisdn"

    async def test_an_amount_out_of_range_alone_is_answered_with_the_range(self, api: Api) -> None:
        response = await api.client.post(
            "/deposit",
            json={**DEPOSIT, "amount_kes": 250_001},
            headers=api.auth(new_user(), **{"Idempotency-Key": new_key()}),
        )
        problem = _problem(response, 422, "amount_out_of_range")
        assert (problem["minimum"], problem["maximum"]) == (api.settings.deposit_min_kes, api.settings.deposit_max_kes)
        assert "errors" not in problem

    async def test_without_a_token_it_is_401(self, api: Api) -> None:
        response = await api.client.post("/deposit", json=DEPOSIT, headers={"Idempotency-Key": new_key()})
        _problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_body_that_is_not_json_is_415(self, api: Api) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key(), "Content-Type": "text/plain"})
        response = await api.client.post("/deposit", content=json.dumps(DEPOSIT), headers=headers)
        _problem(response, 415, "unsupported_media_type")

    async def test_a_huge_body_is_413(self, api: Api) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        response = await api.client.post("/deposit", json={**DEPOSIT, "pad": "x" * 40_000}, headers=headers)
        _problem(response, 413, "body_too_large")

    async def test_a_malformed_json_body_is_422(self, api: Api) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key(), "Content-Type": "application/json"})
        response = await api.client.post("/deposit", content=b'{"amount_kes": ', headers=headers)
        _problem(response, 422, "invalid_json")

    async def test_a_deposit_beyond_the_daily_limit_is_422(self, make_api: MakeApi) -> None:
        api = await make_api(daily_limit_kes=300_000)
        user = new_user()
        first = await api.client.post(
            "/deposit",
            json={**DEPOSIT, "amount_kes": 200_000},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        second = await api.client.post(
            "/deposit",
            json={**DEPOSIT, "amount_kes": 200_000},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        assert first.status_code == 202
        problem = _problem(second, 422, "limit_exceeded")
        assert problem["remaining"] == 100_000


class TestIdempotency:
    async def test_a_deposit_needs_an_idempotency_key(self, api: Api) -> None:
        response = await api.client.post("/deposit", json=DEPOSIT, headers=api.auth(new_user()))
        _problem(response, 422, "idempotency_key_required")

    async def test_the_same_key_and_body_replays_the_first_response_byte_for_byte(self, api: Api, db: Database) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        first = await api.client.post("/deposit", json=DEPOSIT, headers=headers)
        before = await _agent(db)
        # the same JSON value, written differently, is the same request
        replay = await api.client.post(
            "/deposit",
            content=json.dumps(dict(reversed(list(DEPOSIT.items())))),
            headers={**headers, "Content-Type": "application/json"},
        )

        assert first.status_code == replay.status_code == 202
        assert replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        assert (await _agent(db)).credits_pending == before.credits_pending  # nothing reserved twice

    async def test_the_same_key_with_another_body_is_422(self, api: Api) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        await api.client.post("/deposit", json=DEPOSIT, headers=headers)
        response = await api.client.post("/deposit", json={**DEPOSIT, "amount_kes": 2_000}, headers=headers)
        _problem(response, 422, "idempotency_key_reused")

    async def test_the_same_key_while_the_first_request_is_in_flight_is_409(self, api: Api, db: Database) -> None:
        user, key = new_user(), new_key()
        from penpay.api.idempotency import request_hash  # noqa: PLC0415

        body = json.dumps(DEPOSIT).encode()
        async with db.uow() as uow:  # the first request has claimed the key and is still working
            await uow.idempotency.begin(
                IdempotencyKey(UserId(user), key), request_hash("POST", "/deposit", body), uow.now
            )
            await uow.commit()
        response = await api.client.post(
            "/deposit",
            content=body,
            headers=api.auth(user, **{"Idempotency-Key": key, "Content-Type": "application/json"}),
        )
        _problem(response, 409, "idempotency_request_in_flight")

    async def test_keys_are_scoped_per_user(self, api: Api) -> None:
        key = new_key()
        a = await api.client.post("/deposit", json=DEPOSIT, headers=api.auth(new_user(), **{"Idempotency-Key": key}))
        b = await api.client.post("/deposit", json=DEPOSIT, headers=api.auth(new_user(), **{"Idempotency-Key": key}))
        assert a.status_code == b.status_code == 202
        assert a.json()["id"] != b.json()["id"]

    async def test_a_rejection_by_a_rule_is_replayed_too(self, api: Api) -> None:
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        first = await api.client.post("/deposit", json={**DEPOSIT, "amount_kes": 5}, headers=headers)
        again = await api.client.post("/deposit", json={**DEPOSIT, "amount_kes": 5}, headers=headers)
        assert first.status_code == again.status_code == 422
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"


class TestLimitsUnderConcurrency:
    async def test_parallel_deposits_of_one_user_never_exceed_the_daily_limit(self, api: Api) -> None:
        user = new_user()

        async def deposit() -> int:
            response = await api.client.post(
                "/deposit",
                json={**DEPOSIT, "amount_kes": 100_000},
                headers=api.auth(user, **{"Idempotency-Key": new_key()}),
            )
            return response.status_code

        statuses = await asyncio.gather(*(deposit() for _ in range(20)))

        assert statuses.count(202) == 5  # 5 x 100,000 = the 500,000 daily limit
        assert statuses.count(422) == 15
        listed = await api.client.get("/transactions?limit=100", headers=api.auth(user))
        assert sum(t["amount_kes"] for t in listed.json()["items"]) == 500_000


class TestFloat:
    async def test_a_deposit_the_deriv_float_cannot_cover_is_503_and_reserves_nothing(
        self, make_api: MakeApi, db: Database
    ) -> None:
        api = await make_api(deposit_max_kes=10**13, daily_limit_kes=10**14)
        before = await _agent(db)
        too_much = int(Decimal(before.available.minor + 100_00) / 100 * Decimal("132")) + 1
        headers = api.auth(new_user(), **{"Idempotency-Key": new_key()})
        response = await api.client.post("/deposit", json={**DEPOSIT, "amount_kes": too_much}, headers=headers)

        _problem(response, 503, "float_unavailable")
        assert (await _agent(db)).credits_pending == before.credits_pending
        retried = await api.client.post("/deposit", json={**DEPOSIT, "amount_kes": too_much}, headers=headers)
        assert retried.status_code == 503 and "idempotent-replayed" not in retried.headers  # the key was released


class TestRateLimits:
    async def test_a_user_over_budget_gets_429_with_retry_after(self, make_api: MakeApi) -> None:
        api = await make_api(rate_limit_user_per_min=3)
        user = new_user()
        statuses = []
        for _ in range(5):
            response = await api.client.get("/transactions", headers=api.auth(user))
            statuses.append(response.status_code)
        assert statuses == [200, 200, 200, 429, 429]
        _problem(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        other = await api.client.get("/transactions", headers=api.auth(new_user()))
        assert other.status_code == 200  # budgets are per user

    async def test_a_client_address_over_budget_gets_429(self, make_api: MakeApi) -> None:
        address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        api = await make_api(client_ip=address, rate_limit_ip_per_min=2)
        statuses = [(await api.client.get("/fx/quote")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]

    async def test_the_limiter_fails_open_when_redis_is_down(self, make_api: MakeApi) -> None:
        broken = aioredis.from_url(  # nothing listens there; no retries, to keep the test short
            "redis://127.0.0.1:1", socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            api = await make_api(redis=broken, rate_limit_ip_per_min=1)
            statuses = [(await api.client.get("/fx/quote")).status_code for _ in range(2)]
        finally:
            await broken.aclose()
        assert statuses == [200, 200]  # payments do not stop for the rate limiter (it logs a warning)

    async def test_an_address_over_budget_gets_429_before_a_bad_token_gets_401(self, make_api: MakeApi) -> None:
        address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        api = await make_api(client_ip=address, rate_limit_ip_per_min=2)
        bad = {"Authorization": "Bearer not.a.jwt"}
        statuses = [(await api.client.get("/transactions", headers=bad)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]  # tokens cannot be guessed faster than the address's budget

    async def test_authenticated_requests_spend_their_address_budget_too(self, make_api: MakeApi) -> None:
        address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        api = await make_api(client_ip=address, rate_limit_ip_per_min=2)
        statuses = [(await api.client.get("/transactions", headers=api.auth(new_user()))).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        # GET /transactions/{id} reads the address too (for the admin gate) and charges it once, not twice
        # another address of the same /24: the first one's last octet is 1-250, never 251
        api = await make_api(client_ip=address.rsplit(".", 1)[0] + ".251", rate_limit_ip_per_min=2)
        user = new_user()
        statuses = [
            (await api.client.get("/transactions/01JAAAAAAAAAAAAAAAAAAAAAAA", headers=api.auth(user))).status_code
            for _ in range(3)
        ]
        assert statuses == [404, 404, 429]
