"""``DarajaMpesa`` (the M-Pesa port) against the Daraja simulator, for every test identity in docs/sandbox.md: what
each request returns, and what each callback means once mapped to domain values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from penpay.adapters.daraja import (
    DarajaClient,
    parse_b2c_queue_timeout,
    parse_b2c_result,
    parse_stk_callback,
    parse_transaction_status_result,
)
from penpay.adapters.daraja.mpesa import (
    DarajaMpesa,
    account_reference,
    payment_result_from_b2c_result,
    payment_result_from_payout_result_body,
    payment_result_from_queue_timeout,
    payment_result_from_stk_callback,
    payment_result_from_transaction_status,
)
from penpay_domain.ids import PayoutId, TransactionId
from penpay_domain.money import Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.providers import Outcome, PaymentResult, PaymentStatus
from tests.contract.daraja_fixtures import (
    CLIENT_CREDENTIALS,
    CallbackReceiver,
    RunningDaraja,
    callback_receiver,
    running_daraja,
)
from tests.ports import free_port

pytestmark = pytest.mark.contract

TXN = TransactionId("01KB0000000000000000000042")
ORDINARY = Msisdn("254712345678")


@pytest.fixture
async def daraja() -> AsyncIterator[RunningDaraja]:
    async with running_daraja(over_socket=True) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with callback_receiver() as running:
        yield running


def client_for(daraja: RunningDaraja, *, base_url: str | None = None, timeout_s: float = 5.0) -> DarajaClient:
    return DarajaClient(
        base_url=base_url or daraja.url,
        **CLIENT_CREDENTIALS,
        certificate_url=f"{daraja.control_url}/daraja/certificate",
        timeout_s=timeout_s,
    )


@pytest.fixture
async def mpesa(daraja: RunningDaraja) -> AsyncIterator[DarajaMpesa]:
    client = client_for(daraja)
    yield DarajaMpesa(client)
    await client.aclose()


async def push(mpesa: DarajaMpesa, receiver: CallbackReceiver, msisdn: str = ORDINARY, amount: int = 1_500):  # type: ignore[no-untyped-def]
    return await mpesa.stk_push(
        txn_id=TXN, amount=Money.kes(amount), msisdn=Msisdn(msisdn), callback_url=receiver.url("/hooks/stk")
    )


async def pay_out(  # type: ignore[no-untyped-def]
    mpesa: DarajaMpesa, receiver: CallbackReceiver, payout_id: str = "PO0001", msisdn: str = ORDINARY
):
    return await mpesa.b2c_payout(
        payout_id=PayoutId(payout_id),
        amount=Money.kes(2_000),
        msisdn=Msisdn(msisdn),
        remarks="PenPay withdrawal",
        result_url=receiver.url("/hooks/b2c/result"),
        timeout_url=receiver.url("/hooks/b2c/timeout"),
    )


async def stk_result(receiver: CallbackReceiver) -> PaymentResult:
    [delivery] = await receiver.wait_for("/hooks/stk")
    return payment_result_from_stk_callback(parse_stk_callback(delivery.body))


async def settled_query(mpesa: DarajaMpesa, checkout_request_id: str) -> PaymentResult:
    async with asyncio.timeout(5):
        while True:
            answer = await mpesa.stk_query(checkout_request_id=checkout_request_id)
            if answer.status is not PaymentStatus.PENDING:
                return answer
            await asyncio.sleep(0.05)


class TestStkPush:
    async def test_an_ordinary_customer_pays_and_the_callback_carries_amount_and_receipt(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        pushed = await push(mpesa, receiver)
        assert pushed.outcome is Outcome.DONE
        assert pushed.checkout_request_id is not None
        assert pushed.checkout_request_id.startswith("ws_CO_")
        paid = await stk_result(receiver)
        assert paid.status is PaymentStatus.PAID
        assert paid.result_code == "0"
        assert paid.amount == Money.kes(1_500)
        assert paid.receipt is not None
        assert (await settled_query(mpesa, pushed.checkout_request_id)).status is PaymentStatus.PAID

    async def test_the_prompt_shows_a_reference_to_the_transaction(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        await push(mpesa, receiver)
        [request] = daraja.sim.journal(kind="request", path="/mpesa/stkpush/v1/processrequest")
        assert f'"AccountReference":"{account_reference(TXN)}"' in str(request["request"]).replace(" ", "")
        assert account_reference(TXN) == "PP0000000042"

    @pytest.mark.parametrize(
        ("msisdn", "status", "code"),
        [
            ("254700000001", PaymentStatus.CANCELLED, "1032"),
            ("254700000002", PaymentStatus.TIMED_OUT, "1037"),
            ("254700000003", PaymentStatus.WRONG_PIN, "2001"),
            ("254700000004", PaymentStatus.INSUFFICIENT_FUNDS, "1"),
        ],
    )
    async def test_each_failing_identity_is_accepted_then_fails_with_its_code(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver, msisdn: str, status: PaymentStatus, code: str
    ) -> None:
        pushed = await push(mpesa, receiver, msisdn=msisdn)
        assert pushed.outcome is Outcome.DONE
        failed = await stk_result(receiver)
        assert (failed.status, failed.result_code, failed.amount, failed.receipt) == (status, code, None, None)
        assert failed.status.is_final_failure
        assert pushed.checkout_request_id is not None
        queried = await settled_query(mpesa, pushed.checkout_request_id)
        assert (queried.status, queried.result_code) == (status, code)

    async def test_the_identity_without_a_callback_is_pending_then_paid_by_query(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        daraja.sim.callback_delay_s = 0.3
        pushed = await push(mpesa, receiver, msisdn="254700000005")
        assert pushed.checkout_request_id is not None
        pending = await mpesa.stk_query(checkout_request_id=pushed.checkout_request_id)
        assert pending.status is PaymentStatus.PENDING
        await daraja.sim.wait_idle()
        paid = await mpesa.stk_query(checkout_request_id=pushed.checkout_request_id)
        assert (paid.status, paid.result_code) == (PaymentStatus.PAID, "0")
        assert receiver.at("/hooks/stk") == []

    async def test_the_identity_called_back_twice_reports_the_same_payment_twice(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        await push(mpesa, receiver, msisdn="254700000006")
        first, second = await receiver.wait_for("/hooks/stk", count=2)
        results = [payment_result_from_stk_callback(parse_stk_callback(d.body)) for d in (first, second)]
        assert results[0] == results[1]
        assert results[0].status is PaymentStatus.PAID

    async def test_a_refused_push_is_rejected_with_daraja_code_and_message(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        refused = await mpesa.stk_push(
            txn_id=TXN, amount=Money.kes(100), msisdn=ORDINARY, callback_url="https://example.com/mpesa/callback"
        )
        assert (refused.outcome, refused.error_code) == (Outcome.REJECTED, "400.002.02")
        assert refused.message == "Bad Request - Invalid CallBackURL"
        assert refused.checkout_request_id is None

    async def test_a_push_our_own_checks_refuse_is_rejected_without_a_request(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        refused = await push(mpesa, receiver, amount=250_001)
        assert (refused.outcome, refused.error_code) == (Outcome.REJECTED, "invalid_request")
        assert daraja.sim.journal(kind="request", path="/mpesa/stkpush/v1/processrequest") == []

    async def test_a_busy_subscriber_is_unavailable_so_a_later_retry_is_safe(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        daraja.sim.callback_delay_s = 1.0
        assert (await push(mpesa, receiver, msisdn="254722000001")).outcome is Outcome.DONE
        busy = await push(mpesa, receiver, msisdn="254722000001")
        assert busy.outcome is Outcome.UNAVAILABLE
        assert "Unable to lock subscriber" in busy.message

    async def test_ready_means_an_access_token_in_hand(self, daraja: RunningDaraja, mpesa: DarajaMpesa) -> None:
        assert await mpesa.ready() is True
        client = client_for(daraja, base_url=f"http://127.0.0.1:{free_port()}")
        try:
            assert await DarajaMpesa(client).ready() is False  # nothing listens: no token, nothing sent
        finally:
            await client.aclose()

    async def test_daraja_unreachable_is_unavailable(self, daraja: RunningDaraja, receiver: CallbackReceiver) -> None:
        client = client_for(daraja, base_url=f"http://127.0.0.1:{free_port()}")
        result = await push(DarajaMpesa(client), receiver)
        await client.aclose()
        assert result.outcome is Outcome.UNAVAILABLE

    async def test_no_answer_after_sending_is_unknown_and_never_resent(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = client_for(daraja, timeout_s=0.3)
        daraja.sim.response_delay_s = 1.0
        result = await push(DarajaMpesa(client), receiver)
        await client.aclose()
        assert result.outcome is Outcome.UNKNOWN
        assert result.checkout_request_id is None
        assert len(daraja.sim.journal(kind="request", path="/mpesa/stkpush/v1/processrequest")) == 1


class TestStkQuery:
    async def test_a_query_that_fails_is_unknown_not_failed(self, mpesa: DarajaMpesa) -> None:
        answer = await mpesa.stk_query(checkout_request_id="ws_CO_000")
        assert answer.status is PaymentStatus.UNKNOWN
        assert not answer.status.is_final_failure


class TestB2C:
    async def test_an_ordinary_payout_is_accepted_and_its_result_is_paid_with_receipt_and_amount(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        accepted = await pay_out(mpesa, receiver)
        assert accepted.outcome is Outcome.DONE
        assert accepted.conversation_id is not None
        assert accepted.conversation_id.startswith("AG_")
        assert not accepted.duplicate
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        paid = payment_result_from_b2c_result(parse_b2c_result(delivery.body))
        assert (paid.status, paid.result_code, paid.amount) == (PaymentStatus.PAID, "0", Money.kes(2_000))
        assert paid.receipt is not None
        assert payment_result_from_payout_result_body(delivery.body, payout_id=PayoutId("PO0001")) == paid

    async def test_a_resend_of_the_same_payout_is_a_duplicate_never_a_second_payment(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        assert (await pay_out(mpesa, receiver)).outcome is Outcome.DONE
        again = await pay_out(mpesa, receiver)
        assert (again.outcome, again.duplicate, again.error_code) == (Outcome.REJECTED, True, "500.002.1001")
        assert again.conversation_id is None
        await daraja.sim.wait_idle()
        assert len(receiver.at("/hooks/b2c/result")) == 1

    async def test_an_unregistered_recipient_2040_fails_in_the_result_without_a_receipt(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        assert (await pay_out(mpesa, receiver, msisdn="254700000010")).outcome is Outcome.DONE
        [delivery] = await receiver.wait_for("/hooks/b2c/result")
        parsed = parse_b2c_result(delivery.body)
        assert parsed.transaction_id  # Daraja sends one even for a failure
        failed = payment_result_from_b2c_result(parsed)
        assert (failed.status, failed.result_code, failed.receipt, failed.amount) == (
            PaymentStatus.FAILED,
            "2040",
            None,
            None,
        )
        assert failed.status.is_final_failure

    async def test_a_queue_timeout_is_unknown_and_transaction_status_says_paid(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        assert (await pay_out(mpesa, receiver, payout_id="PO0011", msisdn="254700000011")).outcome is Outcome.DONE
        [notice] = await receiver.wait_for("/hooks/b2c/timeout")
        unknown = payment_result_from_queue_timeout(parse_b2c_queue_timeout(notice.body))
        assert unknown.status is PaymentStatus.UNKNOWN
        assert not unknown.status.is_final_failure
        asked = await mpesa.transaction_status(
            payout_id=PayoutId("PO0011"),
            result_url=receiver.url("/hooks/b2c/result"),
            timeout_url=receiver.url("/hooks/b2c/timeout"),
        )
        assert asked is Outcome.DONE
        [answer] = await receiver.wait_for("/hooks/b2c/result")
        paid = payment_result_from_transaction_status(parse_transaction_status_result(answer.body))
        assert (paid.status, paid.amount) == (PaymentStatus.PAID, Money.kes(2_000))
        assert paid.receipt is not None
        assert payment_result_from_payout_result_body(answer.body, payout_id=PayoutId("PO0011")) == paid

    async def test_a_payout_whose_result_never_comes_is_settled_by_transaction_status(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        assert (await pay_out(mpesa, receiver, payout_id="PO0012", msisdn="254700000012")).outcome is Outcome.DONE
        await daraja.sim.wait_idle()
        assert receiver.deliveries == []
        asked = await mpesa.transaction_status(
            payout_id=PayoutId("PO0012"),
            result_url=receiver.url("/hooks/status/result"),
            timeout_url=receiver.url("/hooks/status/timeout"),
        )
        assert asked is Outcome.DONE
        [answer] = await receiver.wait_for("/hooks/status/result")
        settled = payment_result_from_transaction_status(parse_transaction_status_result(answer.body))
        assert settled.status is PaymentStatus.PAID

    async def test_a_status_query_for_a_payout_daraja_never_saw_is_never_a_failure(
        self, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        asked = await mpesa.transaction_status(
            payout_id=PayoutId("PO9999"),
            result_url=receiver.url("/hooks/b2c/result"),
            timeout_url=receiver.url("/hooks/b2c/timeout"),
        )
        assert asked is Outcome.DONE
        [answer] = await receiver.wait_for("/hooks/b2c/result")
        result = payment_result_from_payout_result_body(answer.body, payout_id=PayoutId("PO9999"))
        assert result.status is PaymentStatus.UNKNOWN

    async def test_a_payout_our_own_checks_refuse_is_rejected_without_a_request(
        self, daraja: RunningDaraja, mpesa: DarajaMpesa, receiver: CallbackReceiver
    ) -> None:
        refused = await pay_out(mpesa, receiver, payout_id="not-alphanumeric!")
        assert (refused.outcome, refused.error_code, refused.duplicate) == (Outcome.REJECTED, "invalid_request", False)
        assert daraja.sim.journal(kind="request", path="/mpesa/b2c/v3/paymentrequest") == []

    async def test_daraja_unreachable_is_unavailable_for_payouts_and_status_queries(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = client_for(daraja, base_url=f"http://127.0.0.1:{free_port()}")
        mpesa = DarajaMpesa(client)
        assert (await pay_out(mpesa, receiver)).outcome is Outcome.UNAVAILABLE
        status = await mpesa.transaction_status(
            payout_id=PayoutId("PO0001"),
            result_url=receiver.url("/hooks/b2c/result"),
            timeout_url=receiver.url("/hooks/b2c/timeout"),
        )
        await client.aclose()
        assert status is Outcome.UNAVAILABLE

    async def test_no_answer_after_sending_a_payout_is_unknown_and_never_resent(
        self, daraja: RunningDaraja, receiver: CallbackReceiver
    ) -> None:
        client = client_for(daraja, timeout_s=0.3)
        daraja.sim.response_delay_s = 1.0
        result = await pay_out(DarajaMpesa(client), receiver)
        await client.aclose()
        assert result.outcome is Outcome.UNKNOWN
        assert len(daraja.sim.journal(kind="request", path="/mpesa/b2c/v3/paymentrequest")) == 1
