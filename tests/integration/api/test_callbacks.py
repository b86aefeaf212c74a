"""M-Pesa callbacks: stored raw before the acknowledgement in every case, queued only when verified, and applied
(by the callback worker's ``process_callback``) only when they match a pending transaction and its amount."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
import structlog
import structlog.testing

from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.db.tables import audit_log, mpesa_callbacks
from penpay.adapters.mpesa_callbacks import DarajaCallbackDecoder
from penpay.bootstrap import Database
from penpay.service_layer.callbacks import CallbackUrls, Verdict, process_callback
from penpay.service_layer.intake import CallbackKind
from penpay_domain import ledger
from penpay_domain.ids import PayoutId, TransactionId
from penpay_domain.transaction import LegState, Status
from tests.integration.api.conftest import Api, MakeApi, new_key, new_user, stream_fields
from tests.integration.audit_helpers import chain_audit

pytestmark = pytest.mark.integration

ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}
BLOCKED_WORDS = ("mpesa", "m-pesa", "safaricom", "sql", "query", "exec", "exe", "cmd")  # the sandbox's list


def _stk_body(checkout: str, *, code: int = 0, amount: Any = 1000, receipt: str | None = None) -> dict[str, Any]:
    callback: dict[str, Any] = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": checkout,
        "ResultCode": code,
        "ResultDesc": "The service request is processed successfully." if code == 0 else "Request cancelled by user",
    }
    if code == 0:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": amount},
                {"Name": "MpesaReceiptNumber", "Value": receipt or f"R{secrets.token_hex(4).upper()}"},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": 20261125102115},
                {"Name": "PhoneNumber", "Value": "0722000***"},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def _urls(api: Api) -> CallbackUrls:
    s = api.settings
    return CallbackUrls(
        base_url=s.public_base_url, prefix=s.callback_public_prefix, secret=s.callback_secret.get_secret_value()
    )


def _path(url: str, api: Api) -> str:
    return url.removeprefix(api.settings.public_base_url)


async def _awaiting_payment(api: Api, intake_uow: SqlIntakeUnitOfWork, amount: int = 1000) -> tuple[str, str]:
    response = await api.client.post(
        "/deposit",
        json={"amount_kes": amount, "msisdn": "0712345678", "deriv_loginid": "CR1234567"},
        headers=api.auth(new_user(), **{"Idempotency-Key": new_key()}),
    )
    txn_id, checkout = response.json()["id"], f"ws_CO_{secrets.token_hex(8)}"
    async with intake_uow as uow:  # what the deposit worker does when Daraja accepts the STK push
        txn = await uow.transactions.get(TransactionId(txn_id), for_update=True)
        txn.stk_push_accepted(checkout, uow.now)
        await uow.commit()
    return txn_id, checkout


async def _rows(db: Database, txn_id: str) -> list[Any]:
    async with db.engine.connect() as conn:
        result = await conn.execute(
            sa.select(mpesa_callbacks).where(mpesa_callbacks.c.transaction_id == txn_id).order_by(mpesa_callbacks.c.id)
        )
        return list(result)


async def _status(intake_uow: SqlIntakeUnitOfWork, txn_id: str) -> tuple[Status, dict[str, LegState]]:
    async with intake_uow as uow:
        txn = await uow.transactions.get(TransactionId(txn_id))
    return txn.status, dict(txn.legs)


async def _apply(db: Database, settings_api: Api, callback_id: int) -> Verdict:
    from penpay.adapters.tokens import SecretBox  # noqa: PLC0415

    box = SecretBox.from_settings(settings_api.settings)
    return await process_callback(
        lambda: SqlIntakeUnitOfWork(db.engine, db.clock, box, actor="callback-worker"),
        callback_id,
        DarajaCallbackDecoder(),
    )


async def _queued(redis_client: aioredis.Redis, api: Api) -> set[int]:
    return set(await _queued_for(redis_client, api))


async def _queued_for(redis_client: aioredis.Redis, api: Api) -> dict[int, str | None]:
    """Each queued callback id -> the transaction id its message names."""
    entries = await stream_fields(redis_client, f"{api.settings.stream_prefix}:mpesa_callbacks")
    return {
        int(fields[b"callback_id"]): fields[b"transaction_id"].decode() if b"transaction_id" in fields else None
        for fields in entries
    }


class TestCallbackUrls:
    def test_urls_carry_the_transaction_and_a_token_and_no_word_daraja_refuses(self, api: Api) -> None:
        urls = _urls(api)
        txn_id = "01KAXZ8T1N0000000000000000"
        for kind in CallbackKind:
            url = urls.url(kind, txn_id)
            assert url.startswith(f"{api.settings.public_base_url}/hooks/")
            assert not any(word in url.lower() for word in BLOCKED_WORDS)
            assert urls.verify(kind, txn_id, url.rsplit("/", 1)[1])
        assert not urls.verify(CallbackKind.STK, txn_id, urls.token(CallbackKind.B2C_RESULT, txn_id))

    def test_an_id_whose_base32_spells_a_refused_word_travels_as_hex(self, api: Api) -> None:
        urls = _urls(api)
        for txn_id in ("01KAXZ8T1N000000CMD0000000", "01KAXZ8T1N0000000000EXE000"):
            url = urls.stk(txn_id)
            assert not any(word in url.lower() for word in BLOCKED_WORDS), url

    async def test_a_callback_to_a_hex_url_and_to_a_base32_url_of_before_are_both_matched(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        urls = _urls(api)
        for hex_form in (True, False):
            txn_id, checkout = await _awaiting_payment(api, intake_uow)
            token = urls.token(CallbackKind.STK, txn_id)
            path = _path(urls.stk(txn_id), api) if hex_form else f"/hooks/stk/{txn_id}/{token}"
            response = await api.client.post(path, json=_stk_body(checkout))
            assert response.json() == ACK
            rows = await _rows(db, txn_id)
            assert len(rows) == 1 and rows[0].token_valid and rows[0].transaction_id == txn_id


class TestStkCallback:
    async def test_a_genuine_callback_is_stored_queued_and_confirms_the_payment(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork, redis_client: aioredis.Redis
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        response = await api.client.post(_path(_urls(api).stk(txn_id), api), json=_stk_body(checkout))

        assert response.status_code == 200 and response.json() == ACK
        [row] = await _rows(db, txn_id)
        assert row.token_valid and row.source_allowed and row.kind == "stk"
        assert json.loads(row.body)["Body"]["stkCallback"]["CheckoutRequestID"] == checkout
        assert (await _queued_for(redis_client, api))[row.id] == txn_id  # the worker's lines carry it
        assert await _apply(db, api, row.id) is Verdict.APPLIED
        status, legs = await _status(intake_uow, txn_id)
        assert status is Status.PAYMENT_RECEIVED and legs["kes"] is LegState.POSTED

    async def test_a_duplicate_is_acknowledged_stored_and_changes_nothing(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        body, path = (
            _stk_body(checkout, receipt="RDUP" + secrets.token_hex(3).upper()),
            _path(_urls(api).stk(txn_id), api),
        )
        for _ in range(2):
            assert (await api.client.post(path, json=body)).json() == ACK
        first, second = await _rows(db, txn_id)
        assert await _apply(db, api, first.id) is Verdict.APPLIED
        async with db.uow() as uow:
            collections = await uow.ledger.account(ledger.MPESA_COLLECTIONS.code)
        assert await _apply(db, api, second.id) is Verdict.DUPLICATE
        async with db.uow() as uow:
            assert await uow.ledger.account(ledger.MPESA_COLLECTIONS.code) == collections
        assert (await _status(intake_uow, txn_id))[0] is Status.PAYMENT_RECEIVED

    async def test_a_forged_token_is_acknowledged_stored_audited_and_never_applied(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork, redis_client: aioredis.Redis
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        forged = f"/hooks/stk/{txn_id}/{secrets.token_hex(32)}"
        response = await api.client.post(forged, json=_stk_body(checkout))

        assert response.json() == ACK
        [row] = await _rows(db, txn_id)
        assert not row.token_valid and row.source_allowed
        assert row.id not in await _queued(redis_client, api)
        assert await _apply(db, api, row.id) is Verdict.REJECTED
        assert await _status(intake_uow, txn_id) == (
            Status.AWAITING_PAYMENT,
            {"kes": LegState.PENDING, "usd": LegState.PENDING},
        )
        await chain_audit(db)
        async with db.engine.connect() as conn:
            actions = (
                (await conn.execute(sa.select(audit_log.c.action).where(audit_log.c.subject == txn_id))).scalars().all()
            )
        assert "mpesa.callback_rejected" in actions

    async def test_a_callback_from_an_address_off_the_allowlist_changes_nothing(
        self, make_api: MakeApi, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        api = await make_api(client_ip="198.51.100.23")
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        response = await api.client.post(_path(_urls(api).stk(txn_id), api), json=_stk_body(checkout))

        assert response.status_code == 200 and response.json() == ACK
        [row] = await _rows(db, txn_id)
        assert row.token_valid and not row.source_allowed and row.source_ip == "198.51.100.23"
        assert await _apply(db, api, row.id) is Verdict.REJECTED
        assert (await _status(intake_uow, txn_id))[0] is Status.AWAITING_PAYMENT

    async def test_a_wrong_amount_moves_no_money_and_goes_to_review(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        await api.client.post(_path(_urls(api).stk(txn_id), api), json=_stk_body(checkout, amount=1.00))
        [row] = await _rows(db, txn_id)

        assert await _apply(db, api, row.id) is Verdict.MISMATCH
        status, legs = await _status(intake_uow, txn_id)
        assert status is Status.NEEDS_REVIEW and legs == {"kes": LegState.PENDING, "usd": LegState.PENDING}

    async def test_an_unknown_checkout_request_id_matches_nothing(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, _ = await _awaiting_payment(api, intake_uow)
        await api.client.post(
            _path(_urls(api).stk(txn_id), api), json=_stk_body("ws_CO_unknown" + secrets.token_hex(4))
        )
        [row] = await _rows(db, txn_id)

        assert await _apply(db, api, row.id) is Verdict.UNMATCHED
        assert (await _status(intake_uow, txn_id))[0] is Status.AWAITING_PAYMENT

    async def test_a_cancelled_payment_fails_the_deposit_and_voids_its_reservations(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        # the legacy /mpesa/... path serves the same handler, with the same signed suffix
        legacy = _path(_urls(api).stk(txn_id), api).replace("/hooks/stk/", "/mpesa/callback/")
        assert (await api.client.post(legacy, json=_stk_body(checkout, code=1032))).json() == ACK
        [row] = await _rows(db, txn_id)

        assert await _apply(db, api, row.id) is Verdict.APPLIED
        status, legs = await _status(intake_uow, txn_id)
        assert status is Status.PAYMENT_FAILED and legs == {"kes": LegState.VOIDED, "usd": LegState.VOIDED}

    async def test_an_unsigned_callback_is_stored_and_acknowledged(self, api: Api, db: Database) -> None:
        marker = f"ws_CO_bare_{secrets.token_hex(6)}"
        response = await api.client.post("/mpesa/callback", content=json.dumps(_stk_body(marker)))
        assert response.json() == ACK
        async with db.engine.connect() as conn:
            row = (await conn.execute(sa.select(mpesa_callbacks).where(mpesa_callbacks.c.body.contains(marker)))).one()
        assert row.transaction_id is None and not row.token_valid

    async def test_callers_have_their_own_rate_budget(self, make_api: MakeApi) -> None:
        api = await make_api(
            client_ip=f"10.9.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}", rate_limit_callback_per_min=1
        )
        assert (await api.client.post("/hooks/stk", json={})).status_code == 200
        limited = await api.client.post("/hooks/stk", json={})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1

    async def test_safaricoms_own_addresses_are_never_throttled(self, make_api: MakeApi) -> None:
        source = f"10.8.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        api = await make_api(client_ip=source, callback_allowed_ips=[source], rate_limit_callback_per_min=1)
        for _ in range(3):  # Daraja does not resend a refused callback: a 429 would lose it
            assert (await api.client.post("/hooks/stk", json={})).status_code == 200


class TestB2cResult:
    async def test_a_genuine_b2c_result_completes_a_withdrawal(
        self, api: Api, db: Database, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        user = new_user()
        await api.client.post("/deriv/link", json={"token": "sandbox-user-token-CR5550001"}, headers=api.auth(user))
        created = await api.client.post(
            "/withdraw",
            json={
                "amount_usd": "10.00",
                "msisdn": "0712345678",
                "deriv_loginid": "CR5550001",
                "verification_code": "c0de",
            },
            headers=api.auth(user, **{"Idempotency-Key": new_key()}),
        )
        txn_id, payout, conversation = created.json()["id"], f"P{secrets.token_hex(6)}", f"AG_{secrets.token_hex(8)}"
        async with intake_uow as uow:  # the withdrawal worker: Deriv debited, B2C accepted
            txn = await uow.transactions.get(TransactionId(txn_id), for_update=True)
            txn.start_debit(uow.now)
            txn.complete_debit(deriv_transaction_id="777", now=uow.now)
            txn.payout_accepted(payout_id=PayoutId(payout), conversation_id=conversation, now=uow.now)
            await uow.commit()
        result = {
            "Result": {
                "ResultType": 0,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "OriginatorConversationID": payout,
                "ConversationID": conversation,
                "TransactionID": "SG632NMUAB",
                "ResultParameters": {
                    "ResultParameter": [
                        {"Key": "TransactionAmount", "Value": created.json()["amount_kes"]},
                        {"Key": "TransactionReceipt", "Value": f"S{secrets.token_hex(4).upper()}"},
                    ]
                },
            }
        }
        assert (await api.client.post(_path(_urls(api).b2c_result(txn_id), api), json=result)).json() == ACK
        [row] = await _rows(db, txn_id)

        assert await _apply(db, api, row.id) is Verdict.APPLIED
        status, legs = await _status(intake_uow, txn_id)
        assert status is Status.COMPLETED and legs == {"usd": LegState.POSTED, "kes": LegState.POSTED}


class TestCallbackBursts:
    async def test_callbacks_arriving_together_are_each_stored_audited_and_only_genuine_ones_queued(
        self, api: Api, db: Database, redis_client: aioredis.Redis, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        import asyncio  # noqa: PLC0415

        deposits = [await _awaiting_payment(api, intake_uow) for _ in range(12)]
        urls = _urls(api)

        async def post(i: int, txn_id: str, checkout: str) -> int:
            url = urls.stk(txn_id)
            if i % 3 == 0:  # a forged token: acknowledged and stored like the others, never queued
                url = url.rsplit("/", 1)[0] + "/" + "0" * 64
            response = await api.client.post(_path(url, api), json=_stk_body(checkout))
            assert response.json() == ACK
            return i

        await asyncio.gather(*(post(i, t, c) for i, (t, c) in enumerate(deposits)))

        stored = {txn_id: await _rows(db, txn_id) for txn_id, _ in deposits}
        assert all(len(rows) == 1 for rows in stored.values())
        ids = {txn_id: int(rows[0].id) for txn_id, rows in stored.items()}
        assert len(set(ids.values())) == 12
        queued = await _queued(redis_client, api)
        for i, (txn_id, _) in enumerate(deposits):
            assert (ids[txn_id] in queued) is (i % 3 != 0)
            assert bool(stored[txn_id][0].token_valid) is (i % 3 != 0)
        await chain_audit(db)
        async with db.engine.connect() as conn:
            audited = (
                await conn.execute(
                    sa.select(audit_log.c.subject, audit_log.c.action).where(
                        audit_log.c.subject.in_([t for t, _ in deposits]),
                        audit_log.c.action.like("mpesa.callback_%"),
                    )
                )
            ).all()
        assert sorted(a.subject for a in audited) == sorted(t for t, _ in deposits)
        assert sum(a.action == "mpesa.callback_rejected" for a in audited) == 4

    async def test_a_callback_the_database_refuses_does_not_refuse_the_rest_of_its_batch(
        self, api: Api, db: Database, redis_client: aioredis.Redis
    ) -> None:
        import asyncio  # noqa: PLC0415

        from penpay.adapters.streams import RedisStreamPublisher  # noqa: PLC0415
        from penpay.adapters.tokens import SecretBox  # noqa: PLC0415
        from penpay.api.callback_intake import CallbackIntake  # noqa: PLC0415
        from penpay.service_layer.intake import ReceivedCallback, StoredCallback  # noqa: PLC0415

        box = SecretBox.from_settings(api.settings)
        intake = CallbackIntake(
            lambda: SqlIntakeUnitOfWork(db.engine, db.clock, box, actor="mpesa"),
            RedisStreamPublisher(redis_client, prefix=api.settings.stream_prefix),
            max_in_flight=1,
        )
        marker = secrets.token_hex(6)

        def received(body: str) -> ReceivedCallback:
            return ReceivedCallback(
                kind=CallbackKind.STK,
                transaction_id=None,
                source_ip="196.201.214.200",
                source_allowed=True,
                token_valid=False,
                body=body,
            )

        bodies = [f'{{"n": 0, "m": "{marker}"}}', "x" * 70_000, f'{{"n": 2, "m": "{marker}"}}']  # 70 kB: over TEXT
        try:
            results = await asyncio.gather(*(intake.submit(received(b)) for b in bodies), return_exceptions=True)
        finally:
            await intake.aclose()

        assert isinstance(results[0], StoredCallback) and isinstance(results[2], StoredCallback)
        assert isinstance(results[1], Exception)  # this one's request is answered 500; the others are acknowledged
        async with db.engine.connect() as conn:
            kept = (
                await conn.execute(sa.select(mpesa_callbacks.c.id).where(mpesa_callbacks.c.body.contains(marker)))
            ).all()
        assert sorted(r.id for r in kept) == sorted([results[0].id, results[2].id])


class TestCallbackLogLines:
    """One log line per callback: the request's own, carrying what the callback was; a warning more if unverified."""

    async def test_a_genuine_callback_is_one_request_line_with_its_ids(
        self, api: Api, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await api.client.post(_path(_urls(api).stk(txn_id), api), json=_stk_body(checkout))
        [line] = [e for e in logs if e["log_level"] in ("info", "warning", "error")]
        assert line["event"] == "request" and line["status"] == 200
        assert line["transaction_id"] == txn_id and line["callback_kind"] == "stk" and line["verified"] is True
        assert isinstance(line["callback_id"], int)

    async def test_a_forged_one_also_says_why_it_was_not_trusted(
        self, api: Api, intake_uow: SqlIntakeUnitOfWork
    ) -> None:
        txn_id, checkout = await _awaiting_payment(api, intake_uow)
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await api.client.post(f"/hooks/stk/{txn_id}/{secrets.token_hex(32)}", json=_stk_body(checkout))
        warning = next(e for e in logs if e["event"] == "mpesa callback not verified")
        assert warning["log_level"] == "warning" and warning["token_valid"] is False and warning["source_allowed"]
        assert next(e for e in logs if e["event"] == "request")["verified"] is False
