"""The Daraja simulator, driven by raw HTTP (not by PenPay's client), against reference/daraja.md and the golden
samples: OAuth, STK Push and its validation, the test identities' callbacks, STK Push Query, B2C, Transaction
Status."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.contract.daraja_fixtures import (
    B2C_SHORTCODE,
    CONSUMER_KEY,
    CONSUMER_SECRET,
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

pytestmark = pytest.mark.contract

EAT = dt.timezone(dt.timedelta(hours=3))


@pytest.fixture
async def daraja() -> AsyncIterator[RunningDaraja]:
    async with running_daraja() as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with callback_receiver() as running:
        yield running


@pytest.fixture
async def http(daraja: RunningDaraja) -> AsyncIterator[httpx.AsyncClient]:
    async with daraja.client() as client:
        yield client


async def get_token(http: httpx.AsyncClient, key: str = CONSUMER_KEY, secret: str = CONSUMER_SECRET) -> str:
    response = await http.get("/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(key, secret))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
async def token(http: httpx.AsyncClient) -> str:
    return await get_token(http)


def timestamp_now() -> str:
    return dt.datetime.now(EAT).strftime("%Y%m%d%H%M%S")


def stk_body(receiver: CallbackReceiver, phone: str = "254712345678", **overrides: Any) -> dict[str, Any]:
    ts = timestamp_now()
    body: dict[str, Any] = {
        "BusinessShortCode": SHORTCODE,
        "Password": base64.b64encode(f"{SHORTCODE}{PASSKEY}{ts}".encode()).decode(),
        "Timestamp": ts,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 100,
        "PartyA": phone,
        "PartyB": SHORTCODE,
        "PhoneNumber": phone,
        "CallBackURL": receiver.url("/hooks/stk"),
        "AccountReference": "PP12345",
        "TransactionDesc": "Deposit",
    }
    body.update(overrides)
    return body


def query_body(checkout_id: str) -> dict[str, Any]:
    ts = timestamp_now()
    return {
        "BusinessShortCode": SHORTCODE,
        "Password": base64.b64encode(f"{SHORTCODE}{PASSKEY}{ts}".encode()).decode(),
        "Timestamp": ts,
        "CheckoutRequestID": checkout_id,
    }


def credential(daraja: RunningDaraja, password: str = INITIATOR_PASSWORD) -> str:
    key = x509.load_pem_x509_certificate(daraja.sim.certificate.pem).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return base64.b64encode(key.encrypt(password.encode(), padding.PKCS1v15())).decode()


def b2c_body(daraja: RunningDaraja, receiver: CallbackReceiver, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "OriginatorConversationID": "PPX0001",
        "InitiatorName": INITIATOR,
        "SecurityCredential": credential(daraja),
        "CommandID": "BusinessPayment",
        "Amount": 500,
        "PartyA": B2C_SHORTCODE,
        "PartyB": "254712345678",
        "Remarks": "Withdrawal",
        "QueueTimeOutURL": receiver.url("/hooks/b2c/timeout"),
        "ResultURL": receiver.url("/hooks/b2c/result"),
        "Occassion": "PenPay",
    }
    body.update(overrides)
    return body


def assert_shape(name: str, actual: object) -> None:
    assert shape_problems(golden(name), actual) == []


async def post(http: httpx.AsyncClient, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
B2C = "/mpesa/b2c/v3/paymentrequest"
STATUS = "/mpesa/transactionstatus/v1/query"


class TestOAuth:
    async def test_client_credentials_give_a_token_with_expires_in_as_a_string(self, http: httpx.AsyncClient) -> None:
        response = await http.get(
            "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(CONSUMER_KEY, CONSUMER_SECRET)
        )
        assert response.status_code == 200
        assert response.json()["expires_in"] == "3599"
        assert_shape("oauth_response", decode(response.content))

    async def test_a_non_basic_authorization_is_an_invalid_authentication_type(self, http: httpx.AsyncClient) -> None:
        response = await http.get(
            "/oauth/v1/generate", params={"grant_type": "client_credentials"}, headers={"Authorization": "Bearer x"}
        )
        assert response.status_code == 400
        assert response.json()["errorCode"] == "400.008.01"
        assert response.json()["errorMessage"] == "Invalid authentication type passed"
        assert_shape("error_envelope", response.json())

    async def test_a_wrong_grant_type_is_refused(self, http: httpx.AsyncClient) -> None:
        response = await http.get(
            "/oauth/v1/generate", params={"grant_type": "password"}, auth=(CONSUMER_KEY, CONSUMER_SECRET)
        )
        assert (response.status_code, response.json()["errorCode"]) == (400, "400.008.02")

    async def test_a_wrong_secret_gets_no_token(self, http: httpx.AsyncClient) -> None:
        response = await http.get(
            "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(CONSUMER_KEY, "nope")
        )
        assert response.status_code == 400
        assert "access_token" not in response.text

    async def test_a_new_token_invalidates_the_previous_one(
        self, http: httpx.AsyncClient, receiver: CallbackReceiver
    ) -> None:
        old = await get_token(http)
        new = await get_token(http)
        refused = await post(http, QUERY, old, query_body("ws_CO_0"))
        assert refused.status_code == 404
        assert refused.json()["errorCode"] == "404.001.03"
        assert refused.json()["errorMessage"] == "Invalid Access Token"
        accepted = await post(http, STK, new, stk_body(receiver))
        assert accepted.status_code == 200

    async def test_a_missing_bearer_is_an_invalid_authentication_header(self, http: httpx.AsyncClient) -> None:
        response = await http.post(STK, json={})
        assert (response.status_code, response.json()["errorCode"]) == (404, "404.001.04")

    async def test_get_on_a_product_api_is_method_not_allowed(self, http: httpx.AsyncClient) -> None:
        response = await http.get(STK)
        assert (response.status_code, response.json()["errorCode"]) == (405, "405.001")


class TestStkPushValidation:
    async def test_a_good_request_is_accepted_in_the_documented_shape(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        assert_shape("stk_push_request", stk_body(receiver))  # our test request itself is reference-shaped
        response = await post(http, STK, token, stk_body(receiver))
        assert response.status_code == 200
        assert response.json()["ResponseCode"] == "0"
        assert_shape("stk_push_response", decode(response.content))

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("BusinessShortCode", "17A379"),
            ("BusinessShortCode", "12"),
            ("Timestamp", "2021-06-28 09:24"),
            ("Timestamp", "20211328092408"),
            ("TransactionType", "CustomerPayBill"),
            ("Amount", 0),
            ("Amount", 250_001),
            ("Amount", 10.5),
            ("Amount", True),
            ("PartyA", "0712345678"),
            ("PartyA", "+254712345678"),
            ("PartyB", "x"),
            ("PhoneNumber", "25471234567"),
            ("PhoneNumber", "254312345678"),
            ("CallBackURL", "ftp://example.com/cb"),
            ("CallBackURL", "https://example.com/cb with space"),
            ("AccountReference", "ABCDEFGHIJKLM"),
            ("AccountReference", ""),
            ("TransactionDesc", "ABCDEFGHIJKLMN"),
        ],
    )
    async def test_an_invalid_field_is_named_in_the_error(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver, field: str, value: object
    ) -> None:
        body = stk_body(receiver) | {field: value}
        if field == "Timestamp":  # a well-formed password for the malformed timestamp
            body["Password"] = base64.b64encode(f"{SHORTCODE}{PASSKEY}{value}".encode()).decode()
        response = await post(http, STK, token, body)
        assert response.status_code == 400
        assert response.json()["errorCode"] == "400.002.02"
        assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"
        assert_shape("error_envelope", response.json())

    @pytest.mark.parametrize("word", ["mpesa", "M-PESA", "Safaricom", "sql", "QUERY", "exec", "exe", "cmd"])
    async def test_callback_urls_with_blocked_words_are_refused(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver, word: str
    ) -> None:
        body = stk_body(receiver, CallBackURL=f"https://example.com/{word}/callback")
        response = await post(http, STK, token, body)
        assert response.json()["errorMessage"] == "Bad Request - Invalid CallBackURL"

    async def test_without_json_content_type_daraja_blames_the_shortcode(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        response = await http.post(
            STK, content=json.dumps(stk_body(receiver)), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.json()["errorMessage"] == "Bad Request - Invalid BusinessShortCode"

    async def test_a_body_that_is_not_json_is_an_invalid_payload(self, http: httpx.AsyncClient, token: str) -> None:
        response = await http.post(
            STK, content=b"{not json", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()["errorCode"]) == (400, "400.002.05")

    async def test_a_password_made_with_another_passkey_is_wrong_credentials(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        body = stk_body(receiver)
        body["Password"] = base64.b64encode(f"{SHORTCODE}other{body['Timestamp']}".encode()).decode()
        response = await post(http, STK, token, body)
        assert response.status_code == 500
        assert response.json() | {"requestId": ""} == {
            "requestId": "",
            "errorCode": "500.001.1001",
            "errorMessage": "Wrong credentials",
        }

    async def test_a_password_for_another_timestamp_is_wrong_credentials(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        body = stk_body(receiver, Timestamp="20210628092408")
        response = await post(http, STK, token, body)
        assert response.json()["errorMessage"] == "Wrong credentials"

    async def test_an_unknown_shortcode_is_a_merchant_that_does_not_exist(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        body = stk_body(receiver, BusinessShortCode="600000")
        response = await post(http, STK, token, body)
        assert (response.status_code, response.json()["errorMessage"]) == (500, "Merchant does not exist")

    async def test_one_live_prompt_per_subscriber(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        daraja.sim.callback_delay_s = 1.0  # the customer is still looking at the first prompt
        first = await post(http, STK, token, stk_body(receiver, phone="254711000001"))
        second = await post(http, STK, token, stk_body(receiver, phone="254711000001"))
        assert first.status_code == 200
        assert second.status_code == 500
        assert second.json()["errorCode"] == "500.001.1001"
        assert second.json()["errorMessage"].startswith("Unable to lock subscriber")

    async def test_the_amount_may_come_as_a_numeric_string_like_the_portal_sample(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        response = await post(http, STK, token, stk_body(receiver, Amount="1"))
        assert response.status_code == 200


class TestStkCallbacks:
    @pytest.mark.parametrize(
        ("phone", "code", "desc"),
        [
            ("254700000001", 1032, "Request cancelled by user"),
            ("254700000002", 1037, "DS timeout user cannot be reached"),
            ("254700000003", 2001, "The initiator information is invalid."),
            ("254700000004", 1, "The balance is insufficient for the transaction."),
        ],
    )
    async def test_failing_identities_call_back_with_their_code_and_no_metadata(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver, phone: str, code: int, desc: str
    ) -> None:
        accepted = (await post(http, STK, token, stk_body(receiver, phone=phone))).json()
        [delivery] = await receiver.wait_for("/hooks/stk")
        callback = delivery.json()["Body"]["stkCallback"]
        assert delivery.content_type.startswith("application/json")
        assert callback["ResultCode"] == code
        assert callback["ResultDesc"] == desc
        assert callback["CheckoutRequestID"] == accepted["CheckoutRequestID"]
        assert callback["MerchantRequestID"] == accepted["MerchantRequestID"]
        assert_shape("stk_callback_cancelled", delivery.json())

    @pytest.mark.parametrize("phone", ["254712345678", "254112345678"])
    async def test_any_other_number_pays_with_metadata_in_the_reference_shape(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver, phone: str
    ) -> None:
        await post(http, STK, token, stk_body(receiver, phone=phone, Amount=10500))
        [delivery] = await receiver.wait_for("/hooks/stk")
        assert_shape("stk_callback_success", delivery.json())
        assert b'{"Name":"Amount","Value":10500.00}' in delivery.body  # a decimal JSON number, as Daraja writes it
        items = {i["Name"]: i.get("Value") for i in delivery.json()["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
        assert items["PhoneNumber"] == int(phone)
        assert items["Balance"] is None

    async def test_the_twice_identity_delivers_the_same_callback_twice(
        self, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, STK, token, stk_body(receiver, phone="254700000006"))
        first, second = await receiver.wait_for("/hooks/stk", count=2)
        assert first.body == second.body
        assert first.json()["Body"]["stkCallback"]["ResultCode"] == 0

    async def test_the_silent_identity_never_calls_back_but_the_query_answers_paid(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        accepted = (await post(http, STK, token, stk_body(receiver, phone="254700000005"))).json()
        pending = await post(http, QUERY, token, query_body(accepted["CheckoutRequestID"]))
        assert pending.status_code == 500
        assert pending.json() == {
            "requestId": accepted["CheckoutRequestID"],
            "errorCode": "500.001.1001",
            "errorMessage": "The transaction is being processed",
        }
        assert_shape("stk_query_pending", pending.json())
        await daraja.sim.wait_idle()
        final = await post(http, QUERY, token, query_body(accepted["CheckoutRequestID"]))
        assert final.status_code == 200
        assert final.json()["ResultCode"] == "0"  # a string in the query, a number in the callback
        assert_shape("stk_query_response", decode(final.content))
        assert receiver.at("/hooks/stk") == []
        assert daraja.sim.journal(kind="callback") == []


class TestStkQuery:
    async def test_a_final_failure_is_reported_with_its_code_as_a_string(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        accepted = (await post(http, STK, token, stk_body(receiver, phone="254700000001"))).json()
        await receiver.wait_for("/hooks/stk")
        response = await post(http, QUERY, token, query_body(accepted["CheckoutRequestID"]))
        assert (response.json()["ResultCode"], response.json()["ResultDesc"]) == ("1032", "Request cancelled by user")

    async def test_an_unknown_checkout_id_is_a_bad_request(self, http: httpx.AsyncClient, token: str) -> None:
        response = await post(http, QUERY, token, query_body("ws_CO_000000000000000"))
        assert response.status_code == 400
        assert response.json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"

    async def test_the_query_checks_the_password_too(self, http: httpx.AsyncClient, token: str) -> None:
        body = query_body("ws_CO_1") | {"Password": "d3Jvbmc="}
        response = await post(http, QUERY, token, body)
        assert response.json()["errorMessage"] == "Wrong credentials"


class TestB2C:
    async def test_a_payout_is_accepted_then_its_result_posted_in_the_reference_shape(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        assert_shape("b2c_request", b2c_body(daraja, receiver))
        response = await post(http, B2C, token, b2c_body(daraja, receiver))
        assert response.status_code == 200
        assert response.json()["OriginatorConversationID"] == "PPX0001"
        assert_shape("b2c_response", decode(response.content))
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        assert_shape("b2c_result_success", delivery.json())
        result = delivery.json()["Result"]
        assert result["ConversationID"] == response.json()["ConversationID"]
        assert result["OriginatorConversationID"] == "PPX0001"
        params = {p["Key"]: p["Value"] for p in result["ResultParameters"]["ResultParameter"]}
        assert params["TransactionAmount"] == 500
        assert params["TransactionReceipt"] == result["TransactionID"]

    async def test_a_reused_originator_conversation_id_is_a_duplicate(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver))
        again = await post(http, B2C, token, b2c_body(daraja, receiver))
        assert again.status_code == 500
        assert again.json()["errorCode"] == "500.002.1001"
        assert again.json()["errorMessage"] == "Duplicate OriginatorConversationID."
        await daraja.sim.wait_idle()
        assert len(receiver.at("/hooks/b2c/result")) == 1

    async def test_the_occasion_spelled_occasion_is_accepted_too(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        body = b2c_body(daraja, receiver)
        body["Occasion"] = body.pop("Occassion")
        assert (await post(http, B2C, token, body)).status_code == 200

    @pytest.mark.parametrize(
        ("field", "value"),
        [("Amount", 9), ("Amount", 250_001), ("Remarks", "x"), ("Remarks", "r" * 101), ("PartyB", "0712345678"),
         ("CommandID", "Payment"), ("ResultURL", "https://example.com/mpesa/result"), ("QueueTimeOutURL", "nope")],
    )  # fmt: skip
    async def test_invalid_fields_are_refused_synchronously(
        self,
        daraja: RunningDaraja,
        http: httpx.AsyncClient,
        token: str,
        receiver: CallbackReceiver,
        field: str,
        value: object,
    ) -> None:
        response = await post(http, B2C, token, b2c_body(daraja, receiver, **{field: value}))
        assert response.status_code == 400
        assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"

    @pytest.mark.parametrize("security_credential", ["bm90IHJzYQ==", "not base64 at all", "WRONG"])
    async def test_a_credential_that_does_not_decrypt_to_the_initiator_password_fails_with_2001(
        self,
        daraja: RunningDaraja,
        http: httpx.AsyncClient,
        token: str,
        receiver: CallbackReceiver,
        security_credential: str,
    ) -> None:
        if security_credential == "WRONG":
            security_credential = credential(daraja, "another password")
        response = await post(http, B2C, token, b2c_body(daraja, receiver, SecurityCredential=security_credential))
        assert response.status_code == 200  # Daraja accepts, then refuses in the result
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        result = delivery.json()["Result"]
        assert (result["ResultCode"], result["ResultDesc"]) == (2001, "The initiator information is invalid.")
        assert_shape("b2c_result_failed", delivery.json())

    async def test_an_unregistered_recipient_fails_with_2040(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB="254700000010"))
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        assert delivery.json()["Result"]["ResultCode"] == 2040
        assert "ResultParameters" not in delivery.json()["Result"]
        assert delivery.json()["Result"]["TransactionID"]  # a failure still carries one: never infer success

    async def test_the_queue_timeout_identity_posts_a_timeout_notice_and_no_result(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB="254700000011"))
        [notice] = await receiver.wait_for("/hooks/b2c/timeout")
        assert_shape("b2c_queue_timeout", notice.json())
        await daraja.sim.wait_idle()
        assert receiver.at("/hooks/b2c/result") == []

    async def test_the_silent_identity_gets_no_result_at_all(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB="254700000012"))
        await daraja.sim.wait_idle()
        assert receiver.deliveries == []

    async def test_the_twice_identity_gets_its_result_twice(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB="254700000006"))
        first, second = await receiver.wait_for("/hooks/b2c/result", count=2)
        assert first.body == second.body


def status_body(daraja: RunningDaraja, receiver: CallbackReceiver, **ids: str) -> dict[str, Any]:
    return {
        "Initiator": INITIATOR,
        "SecurityCredential": credential(daraja),
        "CommandID": "TransactionStatusQuery",
        "PartyA": B2C_SHORTCODE,
        "IdentifierType": "4",
        "ResultURL": receiver.url("/hooks/status/result"),
        "QueueTimeOutURL": receiver.url("/hooks/status/timeout"),
        "Remarks": "OK",
        "Occasion": "OK",
        **ids,
    }


class TestTransactionStatus:
    @pytest.mark.parametrize("phone", ["254700000011", "254700000012"])
    async def test_a_payout_without_result_is_reported_completed(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver, phone: str
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB=phone, Amount=300))
        ack = await post(http, STATUS, token, status_body(daraja, receiver, OriginalConversationID="PPX0001"))
        assert ack.status_code == 200
        assert_shape("transaction_status_response", decode(ack.content))
        [delivery] = await receiver.wait_for("/hooks/status/result")
        assert_shape("transaction_status_result", delivery.json())
        result = delivery.json()["Result"]
        params = {p["Key"]: p["Value"] for p in result["ResultParameters"]["ResultParameter"]}
        assert result["ResultCode"] == 0
        assert result["OriginatorConversationID"] == ack.json()["OriginatorConversationID"]
        assert (params["TransactionStatus"], params["Amount"], params["OriginatorConversationID"]) == (
            "Completed",
            "300",
            "PPX0001",
        )

    async def test_an_stk_payment_is_found_by_its_receipt(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, STK, token, stk_body(receiver, Amount=250))
        [callback] = await receiver.wait_for("/hooks/stk")
        items = {i["Name"]: i.get("Value") for i in callback.json()["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
        await post(http, STATUS, token, status_body(daraja, receiver, TransactionID=items["MpesaReceiptNumber"]))
        [delivery] = await receiver.wait_for("/hooks/status/result")
        assert delivery.json()["Result"]["TransactionID"] == items["MpesaReceiptNumber"]
        params = {p["Key"]: p["Value"] for p in delivery.json()["Result"]["ResultParameters"]["ResultParameter"]}
        assert params["Amount"] == "250"

    async def test_a_failed_payout_is_reported_failed(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, B2C, token, b2c_body(daraja, receiver, PartyB="254700000010"))
        await post(http, STATUS, token, status_body(daraja, receiver, OriginalConversationID="PPX0001"))
        [delivery] = await receiver.wait_for("/hooks/status/result")
        params = {p["Key"]: p["Value"] for p in delivery.json()["Result"]["ResultParameters"]["ResultParameter"]}
        assert params["TransactionStatus"] == "Failed"

    async def test_an_unknown_id_is_answered_without_parameters(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, STATUS, token, status_body(daraja, receiver, TransactionID="NOSUCHTXN1"))
        [delivery] = await receiver.wait_for("/hooks/status/result")
        assert delivery.json()["Result"]["ResultCode"] != 0
        assert "ResultParameters" not in delivery.json()["Result"]

    async def test_neither_id_is_a_bad_request(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        response = await post(http, STATUS, token, status_body(daraja, receiver))
        assert response.json()["errorMessage"] == "Bad Request - Invalid TransactionID"


class TestJournal:
    async def test_every_request_and_callback_is_journaled(
        self, daraja: RunningDaraja, http: httpx.AsyncClient, token: str, receiver: CallbackReceiver
    ) -> None:
        await post(http, STK, token, stk_body(receiver))
        await receiver.wait_for("/hooks/stk")
        await daraja.sim.wait_idle()
        async with daraja.control() as control:
            journal = (await control.get("/daraja/journal")).json()
            assert [(e["kind"], e.get("path") or e.get("url")) for e in journal] == [
                ("request", "/oauth/v1/generate"),
                ("request", STK),
                ("callback", receiver.url("/hooks/stk")),
            ]
            assert journal[2]["status"] == 200
            assert (await control.get("/daraja/journal", params={"path": STK})).json()[0]["status"] == 200
            assert (await control.delete("/daraja/journal")).status_code == 204
            assert (await control.get("/daraja/journal")).json() == []

    async def test_the_certificate_is_served_as_pem(self, daraja: RunningDaraja) -> None:
        async with daraja.control() as control:
            response = await control.get("/daraja/certificate")
        assert response.content.startswith(b"-----BEGIN CERTIFICATE-----")
