"""Reading transactions (owner or admin), admin routes, health, metrics, request ids and the OpenAPI contract."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.db.tables import audit_log
from penpay.bootstrap import Database
from penpay_domain.ids import TransactionId
from penpay_domain.money import Money
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user
from tests.integration.api.test_deposits import DEPOSIT, TRANSACTION_FIELDS
from tests.integration.audit_helpers import chain_audit

pytestmark = pytest.mark.integration


async def _deposit(api: Api, user: str, amount: int = 1_000) -> dict[str, object]:
    response = await api.client.post(
        "/deposit", json={**DEPOSIT, "amount_kes": amount}, headers=api.auth(user, **{"Idempotency-Key": new_key()})
    )
    assert response.status_code == 202
    body: dict[str, object] = response.json()
    return body


class TestReadingTransactions:
    async def test_the_owner_and_an_admin_see_a_transaction_and_others_get_404(self, api: Api) -> None:
        owner = new_user()
        created = await _deposit(api, owner)
        path = f"/transactions/{created['id']}"

        mine = await api.client.get(path, headers=api.auth(owner))
        assert mine.status_code == 200 and mine.json() == created
        assert (await api.client.get(path, headers=api.auth(new_user(), role="admin"))).status_code == 200
        theirs = await api.client.get(path, headers=api.auth(new_user()))
        missing = await api.client.get("/transactions/01KAXZ8T1N0000000000000000", headers=api.auth(owner))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["code"] == missing.json()["code"] == "not_found"

    async def test_the_list_is_the_callers_own_newest_first_by_cursor(self, api: Api) -> None:
        user = new_user()
        ids = [(await _deposit(api, user, 100 + n))["id"] for n in range(5)]
        await _deposit(api, new_user())  # someone else's

        first = (await api.client.get("/transactions?limit=2", headers=api.auth(user))).json()
        second = (
            await api.client.get(f"/transactions?limit=2&cursor={first['next_cursor']}", headers=api.auth(user))
        ).json()
        third = (
            await api.client.get(f"/transactions?limit=2&cursor={second['next_cursor']}", headers=api.auth(user))
        ).json()

        seen = [t["id"] for page in (first, second, third) for t in page["items"]]
        assert seen == list(reversed(ids))
        assert third["next_cursor"] is None
        assert list(first["items"][0]) == TRANSACTION_FIELDS


class TestAdmin:
    async def test_ledger_balances_check_and_audit_verification(self, api: Api) -> None:
        admin = api.auth(new_user(), role="admin")
        balances = (await api.client.get("/admin/ledger/balances", headers=admin)).json()
        agent = next(a for a in balances["accounts"] if a["account"] == "deriv:agent")
        assert agent["currency"] == "USD" and "." in agent["balance"]
        check = (await api.client.get("/admin/ledger/check", headers=admin)).json()
        assert check["ok"] is True, check["problems"]
        audit = (await api.client.get("/admin/audit/verify", headers=admin)).json()
        assert audit["ok"] is True and audit["first_bad_row"] is None

    async def test_a_transaction_in_review_is_found_resolved_once_and_audited(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        customer = new_user()
        created = await _deposit(api, customer)
        async with intake_uow as uow:
            txn = await uow.transactions.get(TransactionId(str(created["id"])), for_update=True)
            txn.flag_for_review(reason="no callback, STK query failed", now=uow.now)
            await uow.commit()
        admin_id = new_user()
        admin = api.auth(admin_id, role="admin")

        listed = (await api.client.get("/admin/transactions?status=NEEDS_REVIEW&limit=100", headers=admin)).json()
        assert created["id"] in [t["id"] for t in listed["items"]]
        path = f"/admin/transactions/{created['id']}/resolve"
        resolved = await api.client.post(
            path, json={"status": "PAYMENT_FAILED", "note": "customer never paid"}, headers=admin
        )
        assert resolved.status_code == 200 and resolved.json()["status"] == "PAYMENT_FAILED"
        seen = (await api.client.get(f"/transactions/{created['id']}", headers=api.auth(customer))).json()
        assert seen["status"] == "PAYMENT_FAILED"
        assert seen["failure_reason"] == (
            "The M-Pesa payment was not received; PenPay support confirmed this after review."
        )  # the customer is told why, and not the admin's note ("customer never paid", in the audit log)
        again = await api.client.post(path, json={"status": "PAYMENT_FAILED", "note": "twice"}, headers=admin)
        assert again.status_code == 409 and again.json()["code"] == "illegal_transition"
        await chain_audit(db)
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(audit_log.c.actor, audit_log.c.action).where(audit_log.c.subject == created["id"])
                )
            ).all()
        assert (f"admin:{admin_id}", "admin.resolve") in rows
        assert (await api.client.get("/admin/ledger/check", headers=admin)).json()["ok"] is True

    async def test_retry_sends_a_reviewed_transaction_back_into_the_flow(
        self, api: Api, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        created = await _deposit(api, new_user())
        async with intake_uow as uow:
            txn = await uow.transactions.get(TransactionId(str(created["id"])), for_update=True)
            txn.flag_for_review(reason="Deriv outcome unknown", now=uow.now)
            await uow.commit()
        admin = api.auth(new_user(), role="admin")
        path = f"/admin/transactions/{created['id']}/retry"
        terminal = await api.client.post(path, json={"status": "COMPLETED"}, headers=admin)
        assert terminal.status_code == 409
        retried = await api.client.post(path, json={"status": "CREDITING"}, headers=admin)
        assert retried.status_code == 200 and retried.json()["status"] == "CREDITING"

    async def test_the_deriv_agent_balance_is_reconciled_with_what_deriv_reports(self, api: Api, db: Database) -> None:
        admin = api.auth(new_user(), role="admin")
        await _deposit(api, new_user())  # a pending payout on deriv:agent: the range is wider than one value
        async with db.uow() as uow:
            agent = await uow.ledger.account("deriv:agent")
        posted = agent.debits_posted - agent.credits_posted
        lowest, highest = posted - agent.credits_pending, posted + agent.debits_pending
        assert agent.credits_pending > 0

        for deriv, drift in ((lowest, 0), (highest, 0), (lowest - 1, -1), (highest + 250, 250)):
            api.gateway.agent_balance = Money.usd_cents(deriv)
            body = (await api.client.get("/admin/ledger/deriv-agent", headers=admin)).json()
            assert body == {
                "ok": drift == 0,
                "account": "deriv:agent",
                "currency": "USD",
                "deriv_cents": deriv,
                "posted_cents": posted,
                "credits_pending_cents": agent.credits_pending,
                "debits_pending_cents": agent.debits_pending,
                "lowest_cents": lowest,
                "highest_cents": highest,
                "drift_cents": drift,
                "exact": False,
            }

    async def test_the_deriv_agent_balance_is_for_admins_and_says_when_deriv_cannot_be_asked(self, api: Api) -> None:
        assert (await api.client.get("/admin/ledger/deriv-agent", headers=api.auth(new_user()))).status_code == 403
        api.gateway.agent_balance = Money.kes(5)  # a gateway answering in the wrong currency
        response = await api.client.get("/admin/ledger/deriv-agent", headers=api.auth(new_user(), role="admin"))
        assert response.status_code == 502 and response.json()["code"] == "deriv_unexpected_answer"
        assert "KES" in response.json()["detail"]

    async def test_an_unknown_status_is_422(self, api: Api) -> None:
        response = await api.client.get("/admin/transactions?status=BOGUS", headers=api.auth(new_user(), role="admin"))
        assert response.status_code == 422


class TestOperations:
    async def test_health_and_readiness(self, api: Api) -> None:
        assert (await api.client.get("/healthz")).json() == {"status": "ok"}
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"mysql": "ok", "redis": "ok"}

    async def test_readiness_fails_when_redis_is_unreachable(self, make_api: MakeApi) -> None:
        dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            api = await make_api(redis=dead)
            response = await api.client.get("/readyz")
        finally:
            await dead.aclose()
        assert response.status_code == 503
        assert response.json()["checks"]["mysql"] == "ok" and response.json()["checks"]["redis"] != "ok"

    async def test_metrics_count_requests_by_route_and_status(self, api: Api) -> None:
        await api.client.get("/transactions/01KAXZ8T1N0000000000000000", headers=api.auth(new_user()))
        text = (await api.client.get("/metrics")).text
        assert 'penpay_api_requests_total{method="GET",route="/transactions/{txn_id}",status="404"} 1.0' in text
        assert "penpay_api_request_duration_seconds_bucket" in text

    async def test_the_request_id_is_echoed_or_generated(self, api: Api) -> None:
        given = await api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        generated = await api.client.get("/healthz")
        assert given.headers["x-request-id"] == "abc-123"
        assert len(generated.headers["x-request-id"]) == 32

    async def test_unknown_routes_are_404_problems(self, api: Api) -> None:
        response = await api.client.get("/nope")
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


class TestOpenApi:
    async def test_the_document_pins_the_contract(self, api: Api) -> None:
        assert (await api.client.get("/docs")).status_code == 200
        doc = (await api.client.get("/openapi.json")).json()
        methods = {path: set(ops) for path, ops in doc["paths"].items()}
        expected = {
            "/deposit": {"post"},
            "/withdraw": {"post"},
            "/withdraw/code": {"post"},
            "/transactions/{txn_id}": {"get"},
            "/transactions": {"get"},
            "/fx/quote": {"get"},
            "/deriv/link": {"post"},
            "/mpesa/callback": {"post"},
            "/mpesa/b2c/result": {"post"},
            "/mpesa/b2c/timeout": {"post"},
            "/hooks/stk/{txn_id}/{token}": {"post"},
            "/hooks/b2c/result/{txn_id}/{token}": {"post"},
            "/hooks/b2c/timeout/{txn_id}/{token}": {"post"},
            "/admin/ledger/balances": {"get"},
            "/admin/ledger/check": {"get"},
            "/admin/audit/verify": {"get"},
            "/admin/transactions": {"get"},
            "/admin/transactions/{txn_id}/resolve": {"post"},
            "/admin/transactions/{txn_id}/retry": {"post"},
            "/healthz": {"get"},
            "/readyz": {"get"},
        }
        for path, ops in expected.items():
            assert methods.get(path) == ops, path
        schema = doc["components"]["schemas"]["TransactionOut"]
        assert list(schema["properties"]) == TRANSACTION_FIELDS
        assert schema["properties"]["amount_kes"]["type"] == "integer"
        assert schema["properties"]["amount_usd"]["type"] == "string"
        deposit = doc["components"]["schemas"]["DepositRequest"]
        assert set(deposit["properties"]) == {"amount_kes", "msisdn", "deriv_loginid"}
        assert deposit["additionalProperties"] is False
        assert "202" in doc["paths"]["/deposit"]["post"]["responses"]
