"""PenPay's Daraja client against the Daraja simulator (every call, token expiry, each error shape, read timeouts
without resends), and its parsing of every callback sample in reference/daraja.md (the golden files)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from penpay.adapters.daraja import (
    DarajaAuthError,
    DarajaClient,
    DarajaDuplicateError,
    DarajaOutcomeUnknown,
    DarajaPayloadError,
    DarajaPermanentError,
    DarajaThrottledError,
    DarajaTransientError,
    ErrorClass,
    Outcome,
    b2c_outcome,
    classify_error,
    parse_b2c_queue_timeout,
    parse_b2c_result,
    parse_stk_callback,
    parse_transaction_status_result,
    sanitise,
    stk_outcome,
)
from penpay.adapters.daraja import credentials as creds
from penpay.adapters.daraja.client import CookielessClient
from penpay.adapters.daraja.wire import parse_accepted, parse_access_token, parse_stk_push, parse_stk_query
from penpay.sandbox.daraja_crypto import SandboxCertificate  # only as a source of a valid certificate
from penpay.settings import Settings
from tests.contract.daraja_fixtures import (
    B2C_SHORTCODE,
    CLIENT_CREDENTIALS,
    GOLDEN,
    INITIATOR,
    INITIATOR_PASSWORD,
    PASSKEY,
    SHORTCODE,
    CallbackReceiver,
    RunningDaraja,
    callback_receiver,
    decode,
    golden,
    running_daraja,
    shape_problems,
)
from tests.ports import free_port

pytestmark = pytest.mark.contract

STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
B2C = "/mpesa/b2c/v3/paymentrequest"
STATUS = "/mpesa/transactionstatus/v1/query"
OAUTH = "/oauth/v1/generate"


@pytest.fixture
async def daraja() -> AsyncIterator[RunningDaraja]:
    async with running_daraja(over_socket=True) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with callback_receiver() as running:
        yield running


def mocked_client(http: httpx.AsyncClient, **overrides: Any) -> DarajaClient:
    """A client of a made-up Daraja at ``http://daraja.test`` over ``http`` (an ``httpx.MockTransport``'s client)."""
    arguments: dict[str, Any] = {
        "base_url": "http://daraja.test",
        "consumer_key": "k",
        "consumer_secret": "s",
        "shortcode": SHORTCODE,
        "passkey": PASSKEY,
        "b2c_shortcode": B2C_SHORTCODE,
        "initiator_name": INITIATOR,
        "initiator_password": INITIATOR_PASSWORD,
        "http": http,
    }
    arguments.update(overrides)
    return DarajaClient(**arguments)


def make_client(daraja: RunningDaraja, **overrides: Any) -> DarajaClient:
    arguments: dict[str, Any] = {
        "base_url": daraja.url,
        **CLIENT_CREDENTIALS,
        "certificate_url": f"{daraja.control_url}/daraja/certificate",
        "timeout_s": 5.0,
    }
    arguments.update(overrides)
    return DarajaClient(**arguments)


@pytest.fixture
async def client(daraja: RunningDaraja) -> AsyncIterator[DarajaClient]:
    client = make_client(daraja)
    yield client
    await client.aclose()


def journal_paths(daraja: RunningDaraja) -> list[tuple[str, int]]:
    return [(str(e["path"]), int(str(e["status"]))) for e in daraja.sim.journal(kind="request")]


async def push(client: DarajaClient, receiver: CallbackReceiver, msisdn: str = "254712345678", amount: int = 100):  # type: ignore[no-untyped-def]
    return await client.stk_push(
        amount_kes=amount,
        msisdn=msisdn,
        account_reference="PP-12345",
        description="Deposit",
        callback_url=receiver.url("/hooks/stk"),
    )


async def pay_out(client: DarajaClient, receiver: CallbackReceiver, oid: str = "PP0001", msisdn: str = "254712345678"):  # type: ignore[no-untyped-def]
    return await client.b2c_payment(
        originator_conversation_id=oid,
        amount_kes=500,
        msisdn=msisdn,
        remarks="Withdrawal",
        result_url=receiver.url("/hooks/b2c/result"),
        queue_timeout_url=receiver.url("/hooks/b2c/timeout"),
        occasion="PenPay",
    )


def sent_bodies(daraja: RunningDaraja, path: str) -> list[dict[str, Any]]:
    return [json.loads(str(e["request"])) for e in daraja.sim.journal(kind="request", path=path)]


class TestStkPush:
    async def test_a_push_is_accepted_and_its_callback_parses_as_paid(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        accepted = await push(client, receiver, amount=1500)
        assert accepted.response_code == "0"
        assert accepted.checkout_request_id.startswith("ws_CO_")
        [delivery] = await receiver.wait_for("/hooks/stk")
        callback = parse_stk_callback(delivery.body)
        assert callback.outcome is Outcome.PAID
        assert callback.checkout_request_id == accepted.checkout_request_id
        assert callback.amount_kes == 1500
        assert callback.receipt is not None
        assert callback.phone == "254712345678"

    async def test_the_request_has_the_reference_shape_and_an_eat_password(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await push(client, receiver)
        [sent] = sent_bodies(daraja, STK)
        assert shape_problems(golden("stk_push_request"), sent) == []
        eat_now = dt.datetime.now(dt.timezone(dt.timedelta(hours=3)))
        sent_at = dt.datetime.strptime(sent["Timestamp"], "%Y%m%d%H%M%S").replace(tzinfo=eat_now.tzinfo)
        assert abs(sent_at - eat_now) < dt.timedelta(minutes=1)
        assert sent["Password"] == creds.stk_password(SHORTCODE, PASSKEY, sent["Timestamp"])

    async def test_reference_and_description_are_cut_to_daraja_lengths_and_characters(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await client.stk_push(
            amount_kes=10,
            msisdn="254712345678",
            account_reference="PenPay#Deposit@2026!",
            description="Deposit & fee for 'you'",
            callback_url=receiver.url("/hooks/stk"),
        )
        [sent] = sent_bodies(daraja, STK)
        assert sent["AccountReference"] == "PenPayDeposi"
        assert sent["TransactionDesc"] == "Deposit  fee"

    @pytest.mark.parametrize(
        ("msisdn", "outcome", "code"),
        [
            ("254700000001", Outcome.CANCELLED, "1032"),
            ("254700000002", Outcome.TIMED_OUT, "1037"),
            ("254700000003", Outcome.WRONG_PIN, "2001"),
            ("254700000004", Outcome.INSUFFICIENT_FUNDS, "1"),
        ],
    )
    async def test_each_test_identity_maps_to_its_outcome(
        self, client: DarajaClient, receiver: CallbackReceiver, msisdn: str, outcome: Outcome, code: str
    ) -> None:
        accepted = await push(client, receiver, msisdn=msisdn)
        [delivery] = await receiver.wait_for("/hooks/stk")
        callback = parse_stk_callback(delivery.body)
        assert (callback.outcome, callback.result_code, callback.amount_kes) == (outcome, code, None)
        queried = await client.stk_query(checkout_request_id=accepted.checkout_request_id)
        assert (queried.outcome, queried.result_code) == (outcome, code)

    async def test_an_invalid_callback_url_is_a_permanent_error(
        self, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        with pytest.raises(DarajaPermanentError) as refused:
            await client.stk_push(
                amount_kes=10,
                msisdn="254712345678",
                account_reference="PP1",
                description="Deposit",
                callback_url="https://example.com/mpesa/callback",
            )
        assert refused.value.error_code == "400.002.02"
        assert refused.value.error_message == "Bad Request - Invalid CallBackURL"
        assert refused.value.http_status == 400
        assert refused.value.error_class is ErrorClass.PERMANENT

    async def test_a_second_prompt_to_a_busy_subscriber_is_transient(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        daraja.sim.callback_delay_s = 1.0
        await push(client, receiver, msisdn="254722000001")
        with pytest.raises(DarajaTransientError) as refused:
            await push(client, receiver, msisdn="254722000001")
        assert refused.value.error_message.startswith("Unable to lock subscriber")

    async def test_a_wrong_passkey_is_a_permanent_error(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = make_client(daraja, passkey="not-the-passkey")
        with pytest.raises(DarajaPermanentError, match="Wrong credentials"):
            await push(client, receiver)
        await client.aclose()


class TestStkQuery:
    async def test_pending_then_paid_for_the_identity_that_never_calls_back(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        daraja.sim.callback_delay_s = 0.3  # the customer has not answered yet
        accepted = await push(client, receiver, msisdn="254700000005")
        pending = await client.stk_query(checkout_request_id=accepted.checkout_request_id)
        assert (pending.outcome, pending.result_code) == (Outcome.PENDING, None)
        await daraja.sim.wait_idle()
        paid = await client.stk_query(checkout_request_id=accepted.checkout_request_id)
        assert (paid.outcome, paid.result_code) == (Outcome.PAID, "0")
        assert receiver.deliveries == []

    async def test_an_unknown_checkout_id_is_a_permanent_error(self, client: DarajaClient) -> None:
        with pytest.raises(DarajaPermanentError, match="CheckoutRequestID"):
            await client.stk_query(checkout_request_id="ws_CO_000")


class TestB2C:
    async def test_a_payout_with_the_fetched_sandbox_certificate_is_paid(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        accepted = await pay_out(client, receiver)
        assert accepted.originator_conversation_id == "PP0001"
        assert accepted.conversation_id.startswith("AG_")
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        result = parse_b2c_result(delivery.body)
        assert (result.outcome, result.amount_kes, result.conversation_id) == (
            Outcome.PAID,
            500,
            accepted.conversation_id,
        )
        assert result.receipt == result.transaction_id
        [sent] = sent_bodies(daraja, B2C)
        assert shape_problems(golden("b2c_request"), sent | {"SecurityCredential": "x"}) == []
        assert daraja.sim.certificate.decrypt_credential(sent["SecurityCredential"]) == INITIATOR_PASSWORD

    async def test_the_security_credential_is_computed_once(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await pay_out(client, receiver, oid="PP1")
        await pay_out(client, receiver, oid="PP2")
        first, second = sent_bodies(daraja, B2C)
        assert first["SecurityCredential"] == second["SecurityCredential"]

    async def test_a_resend_with_the_same_id_is_a_duplicate_not_a_second_payout(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await pay_out(client, receiver)
        with pytest.raises(DarajaDuplicateError) as duplicate:
            await pay_out(client, receiver)
        assert duplicate.value.error_code == "500.002.1001"
        await daraja.sim.wait_idle()
        assert len(receiver.at("/hooks/b2c/result")) == 1

    async def test_a_wrong_initiator_password_is_rejected_in_the_result(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = make_client(daraja, initiator_password="wrong")
        await pay_out(client, receiver)
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        result = parse_b2c_result(delivery.body)
        assert (result.outcome, result.result_code) == (Outcome.REJECTED, "2001")
        assert result.transaction_id  # present, and still not a success
        await client.aclose()

    async def test_an_unregistered_recipient_is_rejected(
        self, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await pay_out(client, receiver, msisdn="254700000010")
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        assert parse_b2c_result(delivery.body).outcome is Outcome.REJECTED

    async def test_a_queue_timeout_is_unknown_and_transaction_status_settles_it(
        self, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await pay_out(client, receiver, msisdn="254700000011")
        [notice] = await receiver.wait_for("/hooks/b2c/timeout")
        assert parse_b2c_queue_timeout(notice.body).outcome is Outcome.UNKNOWN
        ack = await client.transaction_status(
            original_conversation_id="PP0001",
            result_url=receiver.url("/hooks/status/result"),
            queue_timeout_url=receiver.url("/hooks/status/timeout"),
        )
        assert ack.response_code == "0"
        [delivery] = await receiver.wait_for("/hooks/status/result")
        status = parse_transaction_status_result(delivery.body)
        assert (status.outcome, status.amount_kes, status.transaction_status) == (Outcome.PAID, 500, "Completed")


class TestTransactionStatus:
    async def test_an_stk_receipt_is_looked_up_by_transaction_id(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await push(client, receiver, amount=700)
        [callback] = await receiver.wait_for("/hooks/stk")
        receipt = parse_stk_callback(callback.body).receipt
        assert receipt is not None
        await client.transaction_status(
            transaction_id=receipt,
            result_url=receiver.url("/hooks/status/result"),
            queue_timeout_url=receiver.url("/hooks/status/timeout"),
        )
        [delivery] = await receiver.wait_for("/hooks/status/result")
        status = parse_transaction_status_result(delivery.body)
        assert (status.outcome, status.receipt, status.amount_kes) == (Outcome.PAID, receipt, 700)
        [sent] = sent_bodies(daraja, STATUS)
        assert "OriginalConversationID" not in sent
        assert set(sent) <= set(golden("transaction_status_request"))

    async def test_exactly_one_identifier_is_required(self, client: DarajaClient) -> None:
        for ids in ({}, {"transaction_id": "A", "original_conversation_id": "B"}):
            with pytest.raises(ValueError, match="exactly one"):
                await client.transaction_status(result_url="http://x/r", queue_timeout_url="http://x/t", **ids)


class TestToken:
    async def test_the_token_is_fetched_once_and_reused(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await push(client, receiver, msisdn="254712000001")
        await push(client, receiver, msisdn="254712000002")
        assert [p for p, _ in journal_paths(daraja)].count(OAUTH) == 1

    async def test_concurrent_calls_share_one_refresh(self, daraja: RunningDaraja, client: DarajaClient) -> None:
        results = await asyncio.gather(
            *(client.stk_query(checkout_request_id=f"ws_CO_{i}") for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, DarajaPermanentError) for r in results)
        assert [p for p, _ in journal_paths(daraja)].count(OAUTH) == 1

    async def test_an_invalidated_token_is_refreshed_and_the_call_retried_once(
        self, daraja: RunningDaraja, client: DarajaClient, receiver: CallbackReceiver
    ) -> None:
        await push(client, receiver, msisdn="254712000001")
        async with daraja.control() as control:
            assert (await control.post("/daraja/tokens/expire")).status_code == 204
        accepted = await push(client, receiver, msisdn="254712000002")
        assert accepted.response_code == "0"
        assert journal_paths(daraja) == [(OAUTH, 200), (STK, 200), (STK, 404), (OAUTH, 200), (STK, 200)]

    async def test_a_token_refused_twice_is_an_auth_error_after_one_retry(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        class ExpiringTransport(httpx.AsyncBaseTransport):
            """Invalidates every token the moment it is issued (as another process taking a new one would)."""

            def __init__(self) -> None:
                self._inner = httpx.AsyncHTTPTransport()

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await self._inner.handle_async_request(request)
                if request.url.path == OAUTH:
                    await response.aread()
                    daraja.sim.expire_tokens()
                return response

        async with httpx.AsyncClient(transport=ExpiringTransport()) as http:
            client = make_client(daraja, http=http)
            with pytest.raises(DarajaAuthError) as refused:
                await push(client, receiver)
        assert refused.value.error_code == "404.001.03"
        assert journal_paths(daraja) == [(OAUTH, 200), (STK, 404), (OAUTH, 200), (STK, 404)]

    async def test_wrong_consumer_credentials_are_an_auth_error(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = make_client(daraja, consumer_secret="wrong")
        with pytest.raises(DarajaAuthError):
            await push(client, receiver)
        assert [p for p, _ in journal_paths(daraja)] == [OAUTH]
        await client.aclose()

    async def test_the_token_is_refreshed_five_minutes_before_it_expires(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        now = [1000.0]
        client = make_client(daraja, monotonic=lambda: now[0])
        await push(client, receiver, msisdn="254712000001")
        now[0] += 3599 - 300 - 1  # still more than five minutes left
        await push(client, receiver, msisdn="254712000002")
        now[0] += 2  # now less than five minutes left: refresh before using it
        await push(client, receiver, msisdn="254712000003")
        assert [p for p, _ in journal_paths(daraja)] == [OAUTH, STK, STK, OAUTH, STK]
        assert all(status == 200 for _, status in journal_paths(daraja))
        await client.aclose()

    @pytest.mark.parametrize(("expires_in", "seconds"), [("3599", 3599), (3599, 3599), (Decimal("3599"), 3599)])
    def test_expires_in_is_read_as_a_number_or_a_string(self, expires_in: object, seconds: int) -> None:
        assert parse_access_token({"access_token": "t", "expires_in": expires_in}).expires_in_s == seconds


class TestUnknownOutcomes:
    async def test_a_read_timeout_on_stk_push_is_unknown_and_never_resent(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = make_client(daraja, timeout_s=0.2)
        async with daraja.control() as control:
            await control.post("/daraja/faults", params={"response_delay_ms": 600})
        with pytest.raises(DarajaOutcomeUnknown):
            await push(client, receiver)
        await receiver.wait_for("/hooks/stk")  # Daraja did execute it: the prompt went out and was paid
        await daraja.sim.wait_idle()
        assert [p for p, _ in journal_paths(daraja)].count(STK) == 1
        await client.aclose()

    async def test_a_read_timeout_on_b2c_is_unknown_and_never_resent(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = make_client(daraja, timeout_s=0.2)
        await client._security_credential()  # fetch the certificate before the fault is injected
        daraja.sim.response_delay_s = 0.6
        with pytest.raises(DarajaOutcomeUnknown):
            await pay_out(client, receiver)
        await receiver.wait_for("/hooks/b2c/result")
        await daraja.sim.wait_idle()
        assert [p for p, _ in journal_paths(daraja)].count(B2C) == 1
        await client.aclose()

    async def test_a_read_timeout_on_a_query_is_transient(self, daraja: RunningDaraja) -> None:
        client = make_client(daraja, timeout_s=0.2)
        daraja.sim.response_delay_s = 0.6
        with pytest.raises(DarajaTransientError):
            await client.stk_query(checkout_request_id="ws_CO_1")
        await client.aclose()

    async def test_a_refused_connection_is_transient_because_nothing_was_sent(self, daraja: RunningDaraja) -> None:
        client = make_client(daraja, base_url=f"http://127.0.0.1:{free_port()}")
        with pytest.raises(DarajaTransientError):
            await client.stk_query(checkout_request_id="ws_CO_1")
        await client.aclose()

    async def test_a_bare_gateway_error_on_a_money_call_is_unknown(self) -> None:
        def gateway(request: httpx.Request) -> httpx.Response:
            if request.url.path == OAUTH:
                return httpx.Response(200, json={"access_token": "t", "expires_in": "3599"})
            return httpx.Response(504, text="<html>Gateway Timeout</html>")

        async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as http:
            client = mocked_client(http, certificate_url="http://daraja.test/cert")
            with pytest.raises(DarajaOutcomeUnknown):
                await client.stk_push(
                    amount_kes=10,
                    msisdn="254712345678",
                    account_reference="A",
                    description="B",
                    callback_url="http://h/c",
                )


class TestInputs:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"amount_kes": 0},
            {"amount_kes": 250_001},
            {"msisdn": "0712345678"},
            {"msisdn": "+254712345678"},
            {"account_reference": "###"},
        ],
    )
    async def test_stk_push_refuses_bad_input_before_sending(
        self, daraja: RunningDaraja, kwargs: dict[str, Any]
    ) -> None:
        client = make_client(daraja)
        arguments: dict[str, Any] = {
            "amount_kes": 10,
            "msisdn": "254712345678",
            "account_reference": "A",
            "description": "B",
            "callback_url": "http://h/c",
        } | kwargs
        with pytest.raises(ValueError, match=r"amount|msisdn|AccountReference"):
            await client.stk_push(**arguments)
        assert daraja.sim.journal() == []
        await client.aclose()

    async def test_an_amount_must_be_an_int_never_a_float(self, daraja: RunningDaraja) -> None:
        client = make_client(daraja)
        with pytest.raises(TypeError):
            await client.stk_push(
                amount_kes=10.0,  # type: ignore[arg-type]
                msisdn="254712345678",
                account_reference="A",
                description="B",
                callback_url="http://h/c",
            )
        await client.aclose()

    @pytest.mark.parametrize("oid", ["", "A" * 21, "has space", "dash-ed"])
    async def test_b2c_needs_a_short_alphanumeric_originator_id(
        self, daraja: RunningDaraja, receiver: CallbackReceiver, oid: str
    ) -> None:
        client = make_client(daraja)
        with pytest.raises(ValueError, match="OriginatorConversationID"):
            await pay_out(client, receiver, oid=oid)
        await client.aclose()

    def test_sanitise_keeps_daraja_safe_characters_only(self) -> None:
        assert sanitise("Pay #42 @ PenPay & co", 13) == "Pay 42  PenPa"

    def test_from_settings_uses_the_sandbox_certificate_url_without_a_cert_path(self) -> None:
        client = DarajaClient.from_settings(Settings(_env_file=None, sandbox_http_port=18092))
        assert client._certificate_url == "http://127.0.0.1:18092/daraja/certificate"

    def test_from_settings_reads_the_certificate_path(self, tmp_path: Any) -> None:
        path = tmp_path / "cert.cer"
        path.write_bytes(SandboxCertificate().pem)
        client = DarajaClient.from_settings(Settings(_env_file=None, daraja_cert_path=str(path)))
        assert client._certificate == path.read_bytes()


class TestGoldenCallbacks:
    """Every callback sample of reference/daraja.md parses, with the documented quirks."""

    def test_the_stk_success_sample(self) -> None:
        callback = parse_stk_callback((GOLDEN / "stk_callback_success.json").read_bytes())
        assert callback.outcome is Outcome.PAID
        assert (callback.amount_kes, callback.receipt, callback.transaction_date, callback.phone) == (
            1,
            "NLJ7RT61SV",
            "20191219102115",
            "254708374149",
        )
        assert callback.checkout_request_id == "ws_CO_191220191020363925"

    def test_the_stk_cancelled_sample(self) -> None:
        callback = parse_stk_callback((GOLDEN / "stk_callback_cancelled.json").read_bytes())
        assert (callback.outcome, callback.result_code, callback.amount_kes) == (Outcome.CANCELLED, "1032", None)

    def test_the_b2c_result_sample(self) -> None:
        result = parse_b2c_result((GOLDEN / "b2c_result_success.json").read_bytes())
        assert (result.outcome, result.amount_kes, result.receipt) == (Outcome.PAID, 10, "SG632NMUAB")
        assert result.recipient_registered is True
        assert result.completed_at == "06.07.2024 22:48:52"
        assert result.parameters["B2CUtilityAccountAvailableFunds"] == "8959269.60"  # exact, no float
        assert result.reference == {
            "QueueTimeoutURL": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit"
        }

    def test_a_failed_b2c_result_with_a_transaction_id_is_not_paid(self) -> None:
        result = parse_b2c_result((GOLDEN / "b2c_result_failed.json").read_bytes())
        assert result.transaction_id == "NLJ0000000"
        assert (result.outcome, result.amount_kes) == (Outcome.REJECTED, None)

    def test_the_queue_timeout_notice_is_unknown_whatever_its_code(self) -> None:
        notice = parse_b2c_queue_timeout((GOLDEN / "b2c_queue_timeout.json").read_bytes())
        assert notice.outcome is Outcome.UNKNOWN
        assert notice.result_code == "1"

    def test_the_transaction_status_sample(self) -> None:
        status = parse_transaction_status_result((GOLDEN / "transaction_status_result.json").read_bytes())
        assert (status.outcome, status.amount_kes, status.receipt) == (Outcome.PAID, 300, "NEF61H8J60")

    def test_sync_answers_parse(self) -> None:
        assert parse_stk_push(json.dumps(golden_raw("stk_push_response"))).response_code == "0"
        assert parse_stk_query(json.dumps(golden_raw("stk_query_response"))).outcome is Outcome.PAID
        assert parse_accepted(json.dumps(golden_raw("b2c_response"))).conversation_id.startswith("AG_")
        assert parse_accepted(json.dumps(golden_raw("transaction_status_response"))).response_code == "0"
        assert parse_access_token(json.dumps(golden_raw("oauth_response"))).expires_in_s == 3599


def golden_raw(name: str) -> Any:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def stk_success(items: object, result_code: object = 0) -> dict[str, Any]:
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "1",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": result_code,
                "ResultDesc": "ok",
                "CallbackMetadata": {"Item": items},
            }
        }
    }


class TestCallbackQuirks:
    def test_result_code_may_be_a_string(self) -> None:
        assert parse_stk_callback(stk_success([], result_code="0")).outcome is Outcome.PAID

    def test_items_are_found_by_name_in_any_order_and_may_be_a_single_object(self) -> None:
        items = [{"Name": "PhoneNumber", "Value": 254712345678}, {"Name": "Amount", "Value": Decimal("10500.00")}]
        assert parse_stk_callback(stk_success(items)).amount_kes == 10500
        assert parse_stk_callback(stk_success({"Name": "Amount", "Value": 5})).amount_kes == 5

    def test_a_masked_phone_is_kept_as_text(self) -> None:
        callback = parse_stk_callback(stk_success([{"Name": "PhoneNumber", "Value": "0722000***"}]))
        assert callback.phone == "0722000***"

    def test_a_fractional_amount_is_refused_not_rounded(self) -> None:
        with pytest.raises(DarajaPayloadError):
            parse_stk_callback(b'{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"c",'
                               b'"ResultCode":0,"ResultDesc":"","CallbackMetadata":{"Item":[{"Name":"Amount",'
                               b'"Value":100.50}]}}}}')  # fmt: skip

    def test_an_already_decoded_float_amount_is_converted_exactly(self) -> None:
        assert parse_stk_callback(stk_success([{"Name": "Amount", "Value": 100.0}])).amount_kes == 100

    def test_result_parameter_may_be_a_single_object(self) -> None:
        body = {
            "Result": {
                "ResultType": 0,
                "ResultCode": "0",
                "ResultDesc": "ok",
                "OriginatorConversationID": "o",
                "ConversationID": "c",
                "TransactionID": "T",
                "ResultParameters": {"ResultParameter": {"Key": "TransactionAmount", "Value": 10}},
                "ReferenceData": {"ReferenceItem": [{"Key": "Occasion", "Value": "x"}]},
            }
        }
        result = parse_b2c_result(body)
        assert (result.outcome, result.amount_kes, result.reference) == (Outcome.PAID, 10, {"Occasion": "x"})

    def test_a_body_of_the_wrong_shape_is_a_payload_error(self) -> None:
        for bad in (b"[]", b"not json", b'{"Body": {}}'):
            with pytest.raises(DarajaPayloadError):
                parse_stk_callback(bad)

    def test_a_status_query_that_itself_failed_leaves_the_outcome_unknown(self) -> None:
        body = {"Result": {"ResultType": 0, "ResultCode": 2001, "ResultDesc": "The initiator information is invalid."}}
        assert parse_transaction_status_result(body).outcome is Outcome.UNKNOWN


class TestCodes:
    @pytest.mark.parametrize(
        ("code", "outcome"),
        [(0, Outcome.PAID), ("0", Outcome.PAID), (1032, Outcome.CANCELLED), (1037, Outcome.TIMED_OUT),
         (2001, Outcome.WRONG_PIN), (1, Outcome.INSUFFICIENT_FUNDS), (17, Outcome.REJECTED),
         ("SFC_IC0003", Outcome.REJECTED), (4242, Outcome.FAILED), ("weird", Outcome.FAILED)],
    )  # fmt: skip
    def test_stk_result_codes(self, code: object, outcome: Outcome) -> None:
        assert stk_outcome(code) is outcome

    @pytest.mark.parametrize(
        ("code", "outcome"),
        [(0, Outcome.PAID), (2001, Outcome.REJECTED), (2040, Outcome.REJECTED), (1, Outcome.INSUFFICIENT_FUNDS),
         (9999, Outcome.FAILED)],
    )  # fmt: skip
    def test_b2c_result_codes(self, code: object, outcome: Outcome) -> None:
        assert b2c_outcome(code) is outcome

    @pytest.mark.parametrize(
        ("code", "message", "kind"),
        [
            ("400.002.02", "Bad Request - Invalid Amount", ErrorClass.PERMANENT),
            ("404.001.03", "Invalid Access Token", ErrorClass.AUTH),
            ("400.003.01", "Invalid Access Token", ErrorClass.AUTH),
            ("500.001.1001", "Wrong credentials", ErrorClass.PERMANENT),
            ("500.001.1001", "Merchant does not exist", ErrorClass.PERMANENT),
            ("500.001.1001", "Unable to lock subscriber, a transaction is already in process", ErrorClass.TRANSIENT),
            ("500.001.1001", "The transaction is being processed", ErrorClass.PENDING),
            ("500.003.02", "System is busy. Please try again in few minutes.", ErrorClass.TRANSIENT),
            ("500.003.02", "Error Occurred: Spike Arrest Violation", ErrorClass.THROTTLED),
            ("500.003.03", "Quota Violation", ErrorClass.THROTTLED),
            ("500.002.1001", "Duplicate OriginatorConversationID.", ErrorClass.DUPLICATE),
            ("500.002.1001", "System internal error.", ErrorClass.TRANSIENT),
            ("500.003.1001", "Internal Server Error", ErrorClass.TRANSIENT),
        ],
    )
    def test_sync_errors_are_classified_on_code_and_message(self, code: str, message: str, kind: ErrorClass) -> None:
        assert classify_error(code, message) is kind

    async def test_a_throttled_answer_raises_the_throttled_class(self) -> None:
        def throttled(request: httpx.Request) -> httpx.Response:
            if request.url.path == OAUTH:
                return httpx.Response(200, json={"access_token": "t", "expires_in": 3599})
            body = {
                "requestId": "1",
                "errorCode": "500.003.02",
                "errorMessage": "Error Occurred: Spike Arrest Violation",
            }
            return httpx.Response(500, json=body)

        async with httpx.AsyncClient(transport=httpx.MockTransport(throttled)) as http:
            client = mocked_client(http, certificate=b"unused")
            with pytest.raises(DarajaThrottledError):
                await client.stk_query(checkout_request_id="ws_CO_1")


def test_golden_samples_decode_with_exact_decimals() -> None:
    body = decode((GOLDEN / "b2c_result_success.json").read_bytes())
    values = {p["Key"]: p["Value"] for p in body["Result"]["ResultParameters"]["ResultParameter"]}
    assert values["B2CChargesPaidAccountAvailableFunds"] == Decimal("-1980.00")


class TestCookies:
    async def test_the_client_keeps_no_cookie_a_response_sets_and_sends_none(self) -> None:
        seen: list[str | None] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("cookie"))
            return httpx.Response(200, json={}, headers={"set-cookie": "session=abc; Path=/"})

        async with CookielessClient(transport=httpx.MockTransport(answer), base_url="http://daraja.test") as client:
            await client.get("/one")
            await client.get("/two")
            assert not client.cookies
            with pytest.raises(ValueError, match="keeps no cookies"):
                client.cookies = {"a": "b"}
        assert seen == [None, None]


class TestWhatIsSent:
    async def test_each_request_carries_its_token_json_body_timeouts_and_no_cookie(self) -> None:
        """The client hands its requests to the transport itself (not through ``AsyncClient.post``): what reaches
        the wire is pinned here: the bearer token, a compact UTF-8 JSON body with its type, the client's timeouts
        for the transport to apply, and no cookie even after Daraja set one."""
        seen: list[httpx.Request] = []

        def daraja(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            cookie = {"set-cookie": "session=abc; Path=/"}
            if request.url.path == OAUTH:
                return httpx.Response(200, json={"access_token": "tok-1", "expires_in": "3599"}, headers=cookie)
            accepted = {
                "MerchantRequestID": "29115-34620561-1",
                "CheckoutRequestID": "ws_CO_191220191020363925",
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
            return httpx.Response(200, json=accepted, headers=cookie)

        async with httpx.AsyncClient(transport=httpx.MockTransport(daraja)) as http:
            client = mocked_client(http, certificate=b"unused", timeout_s=7.0, connect_timeout_s=2.0)
            for _ in range(2):
                await client.stk_push(
                    amount_kes=10,
                    msisdn="254712345678",
                    account_reference="Kâ",
                    description="B",
                    callback_url="http://h/c",
                )
        oauth, push, again = seen
        assert (oauth.method, str(oauth.url)) == ("GET", f"http://daraja.test{OAUTH}?grant_type=client_credentials")
        assert oauth.headers["authorization"] == creds.basic_auth("k", "s")
        assert "content-type" not in oauth.headers and not oauth.content
        assert (push.method, str(push.url)) == ("POST", f"http://daraja.test{STK}")
        assert push.headers["authorization"] == "Bearer tok-1"
        assert push.headers["content-type"] == "application/json"
        assert push.headers["content-length"] == str(len(push.content))
        body = json.loads(push.content)
        assert push.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        assert (body["Amount"], body["PhoneNumber"], body["CallBackURL"]) == (10, "254712345678", "http://h/c")
        for request in seen:
            assert request.extensions["timeout"] == {"connect": 2.0, "read": 7.0, "write": 7.0, "pool": 7.0}
            assert "cookie" not in request.headers
            assert request.headers["user-agent"].startswith("penpay ")
        assert again.headers["authorization"] == "Bearer tok-1"  # the token was kept, not fetched again
