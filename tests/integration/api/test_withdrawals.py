"""Linking a Deriv account, asking for the e-mailed code, and POST /withdraw (linked accounts only, exact USD
amounts, the code kept encrypted for the worker, the B2C float reserved)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from penpay.adapters.db.tables import withdrawal_codes
from penpay.bootstrap import Database
from penpay.service_layer.intake import IntakeUnitOfWork
from penpay_domain import ledger
from penpay_domain.ids import TransactionId
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user

pytestmark = pytest.mark.integration

LOGINID = "CR7654321"
WITHDRAW = {
    "amount_usd": "12.50",
    "msisdn": "+254 712 345 678",
    "deriv_loginid": LOGINID,
    "verification_code": "Xy7Qp2Lm",
}


async def _link(api: Api, user: str, loginid: str = LOGINID) -> None:
    response = await api.client.post(
        "/deriv/link", json={"token": f"sandbox-user-token-{loginid}"}, headers=api.auth(user)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"deriv_loginid": loginid, "currency": "USD"}


async def _b2c(db: Database) -> ledger.Account:
    async with db.uow() as uow:
        return await uow.ledger.account(ledger.MPESA_DISBURSEMENTS.code)


class TestLinking:
    async def test_a_bad_token_is_refused_with_422(self, api: Api) -> None:
        response = await api.client.post("/deriv/link", json={"token": "nope"}, headers=api.auth(new_user()))
        assert response.status_code == 422 and response.json()["code"] == "deriv_token_rejected"

    async def test_the_withdrawal_code_is_requested_for_a_linked_account_only(self, api: Api) -> None:
        user = new_user()
        refused = await api.client.post("/withdraw/code", json={"deriv_loginid": LOGINID}, headers=api.auth(user))
        assert refused.status_code == 403 and refused.json()["code"] == "deriv_account_not_linked"
        await _link(api, user)
        sent = await api.client.post("/withdraw/code", json={"deriv_loginid": LOGINID}, headers=api.auth(user))
        assert sent.status_code == 202 and sent.json() == {"status": "sent", "deriv_loginid": LOGINID}
        assert api.gateway.code_requests == [LOGINID]


class TestWithdraw:
    async def test_a_withdrawal_from_a_linked_account_is_accepted_and_reserves_b2c_money(
        self, api: Api, db: Database, intake_uow: IntakeUnitOfWork
    ) -> None:
        user = new_user()
        await _link(api, user)
        before = await _b2c(db)
        response = await api.client.post(
            "/withdraw", json=WITHDRAW, headers=api.auth(user, **{"Idempotency-Key": new_key()})
        )

        assert response.status_code == 202, response.text
        body = response.json()
        assert body["kind"] == "withdrawal" and body["status"] == "PENDING"
        assert body["amount_usd"] == "12.50" and body["msisdn"] == "254712345678"
        assert body["fx_rate"] == "127.557500"  # 129.50 * 0.985, rounded down against the customer
        assert body["amount_kes"] == int(Decimal("12.50") * Decimal("127.5575"))  # 1594, floored
        assert (await _b2c(db)).credits_pending - before.credits_pending == body["amount_kes"]
        async with db.engine.connect() as conn:
            stored = (
                await conn.execute(
                    sa.select(withdrawal_codes.c.code_ciphertext).where(withdrawal_codes.c.transaction_id == body["id"])
                )
            ).scalar_one()
        assert b"Xy7Qp2Lm" not in stored  # encrypted at rest
        async with intake_uow as uow:
            assert await uow.withdrawal_codes.take(TransactionId(body["id"])) == "Xy7Qp2Lm"
            assert await uow.withdrawal_codes.take(TransactionId(body["id"])) is None  # single use
            await uow.commit()

    async def test_an_account_the_user_has_not_linked_is_403(self, api: Api) -> None:
        other = new_user()
        await _link(api, other)  # linked by someone else
        response = await api.client.post(
            "/withdraw", json=WITHDRAW, headers=api.auth(new_user(), **{"Idempotency-Key": new_key()})
        )
        assert response.status_code == 403 and response.json()["code"] == "deriv_account_not_linked"

    @pytest.mark.parametrize(
        ("amount", "code"),
        [("12.505", "invalid_amount"), ("12", None), ("abc", "invalid_amount"), ("-3", "invalid_amount")],
    )
    async def test_the_usd_amount_is_parsed_exactly(self, api: Api, amount: str, code: str | None) -> None:
        user = new_user()
        await _link(api, user)
        response = await api.client.post(
            "/withdraw",
            json={**WITHDRAW, "amount_usd": amount},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        if code is None:
            assert response.status_code == 202 and response.json()["amount_usd"] == "12.00"
        else:
            assert response.status_code == 422 and response.json()["code"] == code

    async def test_every_bad_field_of_a_withdrawal_is_named_in_one_answer(self, api: Api) -> None:
        user = new_user()
        await _link(api, user)
        response = await api.client.post(
            "/withdraw",
            json={**WITHDRAW, "amount_usd": "5.001", "msisdn": "0812345678"},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "validation_error"
        errors = {e["field"]: (e["type"], e["msg"]) for e in problem["errors"]}
        assert errors == {
            "amount_usd": ("invalid_amount", "'5.001' has more than 2 decimal places for USD"),
            "msisdn": ("invalid_msisdn", "'0812345678' is not a Kenyan mobile number: it must be 07… or 01…"),
        }
        assert "Xy7Qp2Lm" not in response.text

    async def test_a_malformed_usd_amount_is_named_with_its_reason_not_a_pattern(self, api: Api) -> None:
        user = new_user()
        await _link(api, user)
        response = await api.client.post(
            "/withdraw",
            json={**WITHDRAW, "amount_usd": "-3"},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_amount"
        assert response.json()["detail"] == "a withdrawal is a positive amount of USD"
        schema = (await api.client.get("/openapi.json")).json()["components"]["schemas"]["WithdrawRequest"]
        assert schema["properties"]["amount_usd"]["pattern"] == r"^\s*[0-9]+(\.[0-9]+)?\s*$"  # still documented

    async def test_a_number_instead_of_a_decimal_string_is_422(self, api: Api) -> None:
        response = await api.client.post(
            "/withdraw",
            json={**WITHDRAW, "amount_usd": 12.5},
            headers=api.auth(new_user(), **{"Idempotency-Key": new_key()}),
        )
        assert response.status_code == 422 and response.json()["code"] == "validation_error"
        assert "Xy7Qp2Lm" not in response.text  # validation errors never echo the input

    async def test_a_payout_the_b2c_float_cannot_cover_is_503(self, make_api: MakeApi, db: Database) -> None:
        api = await make_api(withdraw_max_kes=10**13, daily_limit_kes=10**14)
        user = new_user()
        await _link(api, user)
        before = await _b2c(db)
        usd = (Decimal(before.available.minor) + 10_000) / Decimal("127")
        response = await api.client.post(
            "/withdraw",
            json={**WITHDRAW, "amount_usd": f"{usd:.2f}"},
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        assert response.status_code == 503 and response.json()["code"] == "float_unavailable"
        assert (await _b2c(db)).credits_pending == before.credits_pending
