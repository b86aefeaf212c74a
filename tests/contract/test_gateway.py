"""The Deriv gateway (gRPC server in-process) against the real Deriv simulator and real Redis.

The client is PenPay's own adapter (``GrpcDerivGateway``), so these tests also pin the adapter's mapping of
gateway answers to domain outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb
from penpay._proto.penpay.gateway.v1 import gateway_pb2_grpc
from penpay.adapters.deriv_gateway import (
    DerivGatewayRequestError,
    DerivGatewayUnavailable,
    DerivTokenRejected,
    GrpcDerivGateway,
)
from penpay.gateway.balances import BalanceTracker
from penpay.gateway.service import MAX_BATCH
from penpay.gateway.tokens import TokenVault
from penpay.sandbox.deriv import DerivSimulator
from penpay.settings import DEV_TOKEN_KEY
from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Money
from penpay_domain.providers import DerivTransferOrder, DerivTransferResult, DerivWithdrawalOrder, Outcome
from tests.contract.deriv_fixtures import AGENT, FAST, eventually, gateways, prefix, redis, sim, user_token
from tests.prometheus_text import samples

__all__ = ["gateways", "prefix", "redis", "sim"]  # fixtures used here

pytestmark = pytest.mark.contract


def ref() -> str:
    return f"T-{uuid.uuid4().hex[:16]}"


def usd(cents: int) -> Money:
    return Money.usd_cents(cents)


def entries_for(sim: DerivSimulator, reference: str) -> list[int]:
    return [e.transaction_id for e in sim.statement(AGENT) if f"PenPay {reference}" in e.longcode]


class TestTransfer:
    async def test_a_transfer_is_done_and_carries_our_reference_in_the_deriv_description(self, sim, gateways):
        _, client = await gateways()
        reference = ref()
        result = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(1250))
        assert result.outcome is Outcome.DONE
        assert entries_for(sim, reference) == [int(result.deriv_transaction_id or 0)]
        assert sim.balance_cents("CR1234567") == 1_000_000 + 1250

    async def test_concurrent_transfers_on_one_socket_are_matched_to_their_own_answers(self, sim, gateways):
        sim.response_delay_ms = (0, 40)
        runtime, client = await gateways()
        references = [ref() for _ in range(12)]
        results = await asyncio.gather(
            *[
                client.transfer(reference=r, loginid=DerivLoginId(f"CR55{i:05d}"), amount=usd(100 + i))
                for i, r in enumerate(references)
            ]
        )
        assert all(r.outcome is Outcome.DONE for r in results)
        for i, (reference, result) in enumerate(zip(references, results, strict=True)):
            assert entries_for(sim, reference) == [int(result.deriv_transaction_id or 0)]
            assert sim.balance_cents(f"CR55{i:05d}") == 1_000_000 + 100 + i
        assert runtime.connection.connects == 1  # one socket carried them all

    async def test_a_repeated_reference_returns_the_recorded_result_and_moves_money_once(self, sim, gateways):
        _, client = await gateways()
        reference = ref()
        first = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(500))
        again = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(500))
        assert again == first
        assert len(entries_for(sim, reference)) == 1

    async def test_a_reference_reused_for_other_money_is_refused(self, gateways):
        _, client = await gateways()
        reference = ref()
        await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(500))
        with pytest.raises(DerivGatewayRequestError):
            await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(501))

    async def test_a_rejection_carries_derivs_code_and_is_recorded(self, sim, gateways):
        _, client = await gateways()
        reference = ref()
        result = await client.transfer(reference=reference, loginid=DerivLoginId("CR9000001"), amount=usd(100))
        assert result.outcome is Outcome.REJECTED
        assert (result.error_code, result.refused_by) == ("PaymentAgentTransferError", "paymentagent_transfer")
        assert await client.transfer(reference=reference, loginid=DerivLoginId("CR9000001"), amount=usd(100)) == result
        assert entries_for(sim, reference) == []

    async def test_a_malformed_request_is_invalid(self, gateways):
        _, client = await gateways()
        with pytest.raises(DerivGatewayRequestError):
            await client.transfer(reference="bad ref!", loginid=DerivLoginId("CR1234567"), amount=usd(100))


class TestTransferBatch:
    """``transfer_many`` (``TransferBatch``): each transfer as ``Transfer`` makes it, each answered on its own."""

    async def test_each_transfer_of_a_batch_is_answered_on_its_own_and_a_repeat_moves_no_money(self, sim, gateways):
        _, client = await gateways()
        done, rejected, reused, malformed = ref(), ref(), ref(), "bad ref!"
        await client.transfer(reference=reused, loginid=DerivLoginId("CR1234567"), amount=usd(500))
        orders = [
            DerivTransferOrder(reference=done, loginid=DerivLoginId("CR7654321"), amount=usd(1250)),
            DerivTransferOrder(reference=rejected, loginid=DerivLoginId("CR9000001"), amount=usd(100)),
            DerivTransferOrder(reference=reused, loginid=DerivLoginId("CR1234567"), amount=usd(501)),  # other money
            DerivTransferOrder(reference=malformed, loginid=DerivLoginId("CR1234567"), amount=usd(100)),
        ]
        first = await client.transfer_many(orders)
        assert isinstance(first[0], DerivTransferResult) and first[0].outcome is Outcome.DONE
        assert entries_for(sim, done) == [int(first[0].deriv_transaction_id or 0)]
        assert isinstance(first[1], DerivTransferResult) and first[1].outcome is Outcome.REJECTED
        assert first[1].error_code == "PaymentAgentTransferError"
        assert isinstance(first[2], DerivGatewayRequestError) and "FAILED_PRECONDITION" in str(first[2])
        assert isinstance(first[3], DerivGatewayRequestError) and "INVALID_ARGUMENT" in str(first[3])

        again = await client.transfer_many(orders[:2])
        assert again == first[:2]  # the recorded results: no second transfer
        assert len(entries_for(sim, done)) == 1
        assert sim.balance_cents("CR7654321") == 1_000_000 + 1250

    async def test_a_batch_is_one_call_and_its_transfers_share_the_socket(self, sim, gateways):
        sim.response_delay_ms = (0, 40)
        runtime, client = await gateways()
        orders = [
            DerivTransferOrder(reference=ref(), loginid=DerivLoginId(f"CR66{i:05d}"), amount=usd(100 + i))
            for i in range(20)
        ]
        results = await client.transfer_many(orders)
        for order, result in zip(orders, results, strict=True):
            assert isinstance(result, DerivTransferResult) and result.outcome is Outcome.DONE
            assert entries_for(sim, order.reference) == [int(result.deriv_transaction_id or 0)]
        assert runtime.connection.connects == 1

    async def test_a_batch_larger_than_the_gateway_takes_is_sent_in_several_calls(self, sim, gateways):
        runtime, _ = await gateways()
        client = GrpcDerivGateway(f"127.0.0.1:{runtime.grpc_port}", timeout_s=5, money_timeout_s=10, batch_size=3)
        try:
            orders = [
                DerivTransferOrder(reference=ref(), loginid=DerivLoginId(f"CR67{i:05d}"), amount=usd(10))
                for i in range(7)
            ]
            results = await client.transfer_many(orders)
        finally:
            await client.close()
        assert [r.outcome for r in results if isinstance(r, DerivTransferResult)] == [Outcome.DONE] * 7

    async def test_more_transfers_than_one_call_may_carry_are_refused_and_none_is_sent(self, sim, gateways):
        runtime, _ = await gateways()
        client = GrpcDerivGateway(f"127.0.0.1:{runtime.grpc_port}", timeout_s=5, money_timeout_s=10, batch_size=300)
        try:
            orders = [
                DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR1234567"), amount=usd(1))
                for _ in range(MAX_BATCH + 1)
            ]
            results = await client.transfer_many(orders)
        finally:
            await client.close()
        assert len(results) == MAX_BATCH + 1
        assert all(isinstance(r, DerivGatewayRequestError) for r in results)
        assert not any(entries_for(sim, o.reference) for o in orders)

    async def test_a_standby_answers_a_batch_unavailable_and_sends_nothing(self, sim, gateways):
        await gateways()
        _, standby_client = await gateways(wait_active=False)
        orders = [DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1)) for _ in range(3)]
        results = await standby_client.transfer_many(orders)
        assert [r.outcome for r in results if isinstance(r, DerivTransferResult)] == [Outcome.UNAVAILABLE] * 3
        assert not any(entries_for(sim, o.reference) for o in orders)

    async def test_a_drop_mid_batch_leaves_the_transfers_unknown_and_a_repeat_settles_them_once(self, sim, gateways):
        runtime, client = await gateways()
        orders = [
            DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR9000002"), amount=usd(1000)),  # answer lost
            DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR1234567"), amount=usd(200)),
        ]
        first = await client.transfer_many(orders)
        assert isinstance(first[0], DerivTransferResult) and first[0].outcome is Outcome.UNKNOWN
        # the other one shared the dropped socket: answered before the drop, sent and its answer lost with the
        # socket, or refused unsent while it reconnected
        assert isinstance(first[1], DerivTransferResult)
        assert first[1].outcome in (Outcome.DONE, Outcome.UNKNOWN, Outcome.UNAVAILABLE)
        await runtime.connection.wait_ready(5)
        again = await client.transfer_many(orders)
        assert [r.outcome for r in again if isinstance(r, DerivTransferResult)] == [Outcome.DONE] * 2
        if first[1].outcome is Outcome.DONE:
            assert again[1] == first[1]
        assert [len(entries_for(sim, o.reference)) for o in orders] == [1, 1]  # each moved once


class _GatewayBeforeTransferBatch(gateway_pb2_grpc.DerivGatewayServicer):
    """A gateway of the release before TransferBatch: Transfer and Withdraw only (the generated base answers the
    batch calls UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.transfers: list[str] = []
        self.withdrawals: list[str] = []
        self.batch_calls = 0

    async def Transfer(self, request: pb.TransferRequest, context: object) -> pb.TransferResponse:
        self.transfers.append(request.reference)
        return pb.TransferResponse(outcome=pb.OUTCOME_DONE, transaction_id=1000 + len(self.transfers))

    async def Withdraw(self, request: pb.WithdrawRequest, context: object) -> pb.WithdrawResponse:
        self.withdrawals.append(request.reference)
        return pb.WithdrawResponse(outcome=pb.OUTCOME_DONE, transaction_id=2000 + len(self.withdrawals))

    def TransferBatch(self, request: pb.TransferBatchRequest, context: Any) -> pb.TransferBatchResponse:
        self.batch_calls += 1
        return super().TransferBatch(request, context)  # type: ignore[no-any-return]

    def WithdrawBatch(self, request: pb.WithdrawBatchRequest, context: Any) -> pb.WithdrawBatchResponse:
        self.batch_calls += 1
        return super().WithdrawBatch(request, context)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def _old_gateway() -> AsyncIterator[tuple[_GatewayBeforeTransferBatch, GrpcDerivGateway]]:
    """A gateway of the release before the batch calls, serving on a free port, and a client of today's."""
    old = _GatewayBeforeTransferBatch()
    server = grpc.aio.server()
    gateway_pb2_grpc.add_DerivGatewayServicer_to_server(old, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = GrpcDerivGateway(f"127.0.0.1:{port}", timeout_s=5, money_timeout_s=5)
    try:
        yield old, client
    finally:
        await client.close()
        await server.stop(None)


class TestRollingUpgrade:
    async def test_workers_upgraded_before_the_gateway_send_each_transfer_on_its_own(self) -> None:
        async with _old_gateway() as (old, client):
            orders = [DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1)) for _ in range(3)]
            first = await client.transfer_many(orders)
            again = await client.transfer_many(orders[:1])
        assert [r.outcome for r in first if isinstance(r, DerivTransferResult)] == [Outcome.DONE] * 3
        assert [r.outcome for r in again if isinstance(r, DerivTransferResult)] == [Outcome.DONE]
        assert sorted(old.transfers) == sorted([o.reference for o in orders] + [orders[0].reference])
        assert old.batch_calls == 1  # asked once; it ran nothing, and is not asked again

    async def test_workers_upgraded_before_the_gateway_send_each_withdrawal_on_its_own(self) -> None:
        async with _old_gateway() as (old, client):
            orders = [
                DerivWithdrawalOrder(
                    reference=ref(),
                    loginid=DerivLoginId("CR1"),
                    token_ciphertext=b"sealed",
                    amount=usd(1),
                    verification_code="C",
                )
                for _ in range(3)
            ]
            first = await client.withdraw_many(orders)
            again = await client.withdraw_many(orders[:1])
            transfers = await client.transfer_many(
                [DerivTransferOrder(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))]
            )
        assert [r.outcome for r in first + again if isinstance(r, DerivTransferResult)] == [Outcome.DONE] * 4
        assert sorted(old.withdrawals) == sorted([o.reference for o in orders] + [orders[0].reference])
        # each batch call asked once: that WithdrawBatch is missing says nothing of TransferBatch
        assert old.batch_calls == 2
        assert [r.outcome for r in transfers if isinstance(r, DerivTransferResult)] == [Outcome.DONE]


class TestUnknownOutcomes:
    async def test_cr9000002_is_unknown_then_found_in_the_statement_and_never_repeated(self, sim, gateways):
        _, client = await gateways()
        reference = ref()
        first = await client.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(1000))
        assert first.outcome is Outcome.UNKNOWN
        found = await client.find_transfer(reference=reference)
        assert found.outcome is Outcome.DONE
        again = await client.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(1000))
        assert again.outcome is Outcome.DONE
        assert again.deriv_transaction_id == found.deriv_transaction_id
        assert len(entries_for(sim, reference)) == 1
        assert sim.balance_cents("CR9000002") == 1_000_000 + 1000

    async def test_a_repeat_after_a_drop_settles_from_the_statement_without_find_transfer(self, sim, gateways):
        _, client = await gateways()
        reference = ref()
        await client.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(700))
        again = await client.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(700))
        assert again.outcome is Outcome.DONE
        assert len(entries_for(sim, reference)) == 1

    async def test_a_socket_dropped_mid_call_answers_unknown_and_the_next_call_works_after_reconnect(
        self, sim, gateways
    ):
        runtime, client = await gateways()
        sim.drop_on_next("paymentagent_transfer")
        lost = ref()
        result = await client.transfer(reference=lost, loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert result.outcome is Outcome.UNKNOWN
        assert await runtime.wait_active(5)
        assert runtime.connection.connects == 2  # reconnected and re-authorised
        nxt = await client.transfer(reference=ref(), loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert nxt.outcome is Outcome.DONE
        # The dropped call never executed: the statement says so, and within the settle window a repeat
        # stays UNKNOWN instead of guessing.
        assert (await client.find_transfer(reference=lost)).error_code == "NotFound"
        repeat = await client.transfer(reference=lost, loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert repeat.outcome is Outcome.UNKNOWN
        assert entries_for(sim, lost) == []

    async def test_after_the_settle_window_a_never_executed_attempt_is_sent_again_exactly_once(self, sim, gateways):
        _, client = await gateways(reconcile_after_s=0)
        sim.drop_on_next("paymentagent_transfer")
        reference = ref()
        first = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert first.outcome is Outcome.UNKNOWN
        repeat = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert repeat.outcome is Outcome.DONE
        third = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(300))
        assert third == repeat
        assert len(entries_for(sim, reference)) == 1

    async def test_a_restarted_gateway_settles_the_in_flight_record_and_transfers_once(self, sim, gateways):
        runtime, client = await gateways()
        reference = ref()
        first = await client.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(900))
        assert first.outcome is Outcome.UNKNOWN
        await runtime.stop()  # "crash": the record stays in_flight in Redis
        _, restarted = await gateways()
        again = await restarted.transfer(reference=reference, loginid=DerivLoginId("CR9000002"), amount=usd(900))
        assert again.outcome is Outcome.DONE
        assert len(entries_for(sim, reference)) == 1


class TestRateLimit:
    async def test_a_rate_limit_is_retried_because_deriv_refused_before_executing(self, sim, gateways):
        _, client = await gateways()
        sim.inject_rate_limit(1)
        reference = ref()
        result = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(100))
        assert result.outcome is Outcome.DONE
        assert len(entries_for(sim, reference)) == 1

    async def test_a_persistent_rate_limit_is_unavailable_and_the_same_reference_works_later(self, sim, gateways):
        _, client = await gateways()
        sim.inject_rate_limit(100)
        reference = ref()
        limited = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(100))
        assert limited.outcome is Outcome.UNAVAILABLE
        assert entries_for(sim, reference) == []
        sim.clear_faults()
        later = await client.transfer(reference=reference, loginid=DerivLoginId("CR1234567"), amount=usd(100))
        assert later.outcome is Outcome.DONE
        assert len(entries_for(sim, reference)) == 1


class TestWithdraw:
    async def _linked(self, client, loginid: str) -> bytes:
        account, ciphertext = await client.link_account(token=user_token(loginid))
        assert account.loginid == loginid
        assert user_token(loginid).encode() not in ciphertext
        return ciphertext

    async def test_link_request_code_and_withdraw_once(self, sim, gateways):
        _, client = await gateways()
        ciphertext = await self._linked(client, "CR4000001")
        loginid = DerivLoginId("CR4000001")
        assert await client.request_withdrawal_code(loginid=loginid, token_ciphertext=ciphertext) is Outcome.DONE
        code = sim.verification_code("CR4000001")
        assert code is not None
        reference = ref()
        kwargs = {"reference": reference, "loginid": loginid, "token_ciphertext": ciphertext, "amount": usd(2000)}
        result = await client.withdraw(verification_code=code, **kwargs)
        assert result.outcome is Outcome.DONE
        assert await client.withdraw(verification_code=code, **kwargs) == result
        assert sim.balance_cents("CR4000001") == 1_000_000 - 2000
        assert len(entries_for(sim, reference)) == 1
        assert (await client.find_transfer(reference=reference)).outcome is Outcome.DONE

    async def test_a_bad_token_cannot_be_linked(self, gateways):
        _, client = await gateways()
        with pytest.raises(DerivTokenRejected):
            await client.link_account(token="not-a-deriv-token")

    async def test_cr9000003_is_rejected(self, sim, gateways):
        _, client = await gateways()
        ciphertext = await self._linked(client, "CR9000003")
        loginid = DerivLoginId("CR9000003")
        await client.request_withdrawal_code(loginid=loginid, token_ciphertext=ciphertext)
        result = await client.withdraw(
            reference=ref(),
            loginid=loginid,
            token_ciphertext=ciphertext,
            amount=usd(100),
            verification_code=sim.verification_code("CR9000003") or "",
        )
        assert result.outcome is Outcome.REJECTED
        assert (result.error_code, result.refused_by) == ("PaymentAgentWithdrawError", "paymentagent_withdraw")

    async def test_a_wrong_code_and_a_revoked_token_are_told_apart_by_the_refused_call(self, sim, gateways):
        """Deriv answers both with InvalidToken; the gateway says which call it refused."""
        _, client = await gateways()
        ciphertext = await self._linked(client, "CR4000004")
        loginid = DerivLoginId("CR4000004")
        await client.request_withdrawal_code(loginid=loginid, token_ciphertext=ciphertext)
        kwargs = {"loginid": loginid, "amount": usd(100)}
        wrong = await client.withdraw(reference=ref(), token_ciphertext=ciphertext, verification_code="WRONG", **kwargs)
        assert (wrong.outcome, wrong.error_code, wrong.refused_by) == (
            Outcome.REJECTED,
            "InvalidToken",
            "paymentagent_withdraw",
        )
        revoked = TokenVault(DEV_TOKEN_KEY).encrypt("a-token-deriv-no-longer-knows")
        refused = await client.withdraw(reference=ref(), token_ciphertext=revoked, verification_code="X", **kwargs)
        assert (refused.outcome, refused.error_code, refused.refused_by) == (
            Outcome.REJECTED,
            "InvalidToken",
            "authorize",
        )
        assert sim.balance_cents("CR4000004") == 1_000_000  # neither moved money

    async def test_cr9000004_is_unknown_then_found_and_never_repeated(self, sim, gateways):
        _, client = await gateways()
        ciphertext = await self._linked(client, "CR9000004")
        loginid = DerivLoginId("CR9000004")
        await client.request_withdrawal_code(loginid=loginid, token_ciphertext=ciphertext)
        reference = ref()
        kwargs = {
            "reference": reference,
            "loginid": loginid,
            "token_ciphertext": ciphertext,
            "amount": usd(300),
            "verification_code": sim.verification_code("CR9000004") or "",
        }
        assert (await client.withdraw(**kwargs)).outcome is Outcome.UNKNOWN
        assert (await client.withdraw(**kwargs)).outcome is Outcome.DONE
        assert len(entries_for(sim, reference)) == 1
        assert sim.balance_cents("CR9000004") == 1_000_000 - 300

    async def test_a_token_for_another_login_id_is_rejected(self, sim, gateways):
        _, client = await gateways()
        ciphertext = await self._linked(client, "CR4000002")
        result = await client.withdraw(
            reference=ref(),
            loginid=DerivLoginId("CR4000003"),
            token_ciphertext=ciphertext,
            amount=usd(100),
            verification_code="X",
        )
        assert result.outcome is Outcome.REJECTED
        assert (result.error_code, result.refused_by) == ("LoginidMismatch", "authorize")


class TestWithdrawBatch:
    """``withdraw_many`` (``WithdrawBatch``): each withdrawal as ``Withdraw`` makes it, each answered on its own."""

    async def _order(self, sim, client, loginid: str, cents: int = 100, *, code: str | None = None):
        account, ciphertext = await client.link_account(token=user_token(loginid))
        login = DerivLoginId(account.loginid)
        assert await client.request_withdrawal_code(loginid=login, token_ciphertext=ciphertext) is Outcome.DONE
        return DerivWithdrawalOrder(
            reference=ref(),
            loginid=login,
            token_ciphertext=ciphertext,
            amount=usd(cents),
            verification_code=code if code is not None else sim.verification_code(loginid) or "",
        )

    async def test_each_withdrawal_of_a_batch_is_answered_on_its_own_and_a_repeat_moves_no_money(self, sim, gateways):
        _, client = await gateways()
        done = await self._order(sim, client, "CR5200001", 2000)
        refused = await self._order(sim, client, "CR9000003")
        wrong_code = await self._order(sim, client, "CR5200002", code="WRONG")
        malformed = replace(await self._order(sim, client, "CR5200003"), reference="bad ref!")
        orders = [done, refused, wrong_code, malformed]
        first = await client.withdraw_many(orders)
        assert isinstance(first[0], DerivTransferResult) and first[0].outcome is Outcome.DONE
        assert len(entries_for(sim, done.reference)) == 1
        assert isinstance(first[1], DerivTransferResult) and first[1].outcome is Outcome.REJECTED
        assert (first[1].error_code, first[1].refused_by) == ("PaymentAgentWithdrawError", "paymentagent_withdraw")
        assert isinstance(first[2], DerivTransferResult)
        assert (first[2].outcome, first[2].error_code) == (Outcome.REJECTED, "InvalidToken")
        assert isinstance(first[3], DerivGatewayRequestError) and "INVALID_ARGUMENT" in str(first[3])

        again = await client.withdraw_many(orders[:3])
        assert again == first[:3]  # the recorded results: no second withdrawal
        assert len(entries_for(sim, done.reference)) == 1
        assert sim.balance_cents("CR5200001") == 1_000_000 - 2000
        assert sim.balance_cents("CR5200002") == 1_000_000 and sim.balance_cents("CR5200003") == 1_000_000

    async def test_a_lost_answer_is_unknown_and_a_repeat_settles_it_once(self, sim, gateways):
        _, client = await gateways()
        lost = await self._order(sim, client, "CR9000004", 300)
        plain = await self._order(sim, client, "CR5200004", 400)
        first = await client.withdraw_many([lost, plain])
        assert isinstance(first[0], DerivTransferResult) and first[0].outcome is Outcome.UNKNOWN
        assert isinstance(first[1], DerivTransferResult) and first[1].outcome is Outcome.DONE
        again = await client.withdraw_many([lost, plain])
        assert [r.outcome for r in again if isinstance(r, DerivTransferResult)] == [Outcome.DONE] * 2
        assert again[1] == first[1]
        assert [len(entries_for(sim, o.reference)) for o in (lost, plain)] == [1, 1]
        assert sim.balance_cents("CR9000004") == 1_000_000 - 300

    async def test_more_withdrawals_than_one_call_may_carry_are_refused_and_none_is_sent(self, sim, gateways):
        runtime, client = await gateways()
        order = await self._order(sim, client, "CR5200005")
        wide = GrpcDerivGateway(f"127.0.0.1:{runtime.grpc_port}", timeout_s=5, money_timeout_s=10, batch_size=300)
        try:
            orders = [replace(order, reference=ref()) for _ in range(MAX_BATCH + 1)]
            results = await wide.withdraw_many(orders)
        finally:
            await wide.close()
        assert len(results) == MAX_BATCH + 1
        assert all(isinstance(r, DerivGatewayRequestError) for r in results)
        assert sim.balance_cents("CR5200005") == 1_000_000

    async def test_a_standby_answers_a_batch_unavailable_and_sends_nothing(self, sim, gateways):
        _, client = await gateways()
        order = await self._order(sim, client, "CR5200006")
        _, standby_client = await gateways(wait_active=False)
        results = await standby_client.withdraw_many([order])
        assert [r.outcome for r in results if isinstance(r, DerivTransferResult)] == [Outcome.UNAVAILABLE]
        assert entries_for(sim, order.reference) == []


class TestClientSessions:
    """The users' own sockets (withdrawals, codes, linking) are bounded: ``PENPAY_DERIV_CLIENT_SESSIONS``."""

    async def _ready_to_withdraw(self, sim, client, loginid: str) -> dict[str, Any]:
        account, ciphertext = await client.link_account(token=user_token(loginid))
        login = DerivLoginId(account.loginid)
        assert await client.request_withdrawal_code(loginid=login, token_ciphertext=ciphertext) is Outcome.DONE
        code = sim.verification_code(loginid) or ""
        return {"loginid": login, "token_ciphertext": ciphertext, "amount": usd(100), "verification_code": code}

    async def test_a_burst_of_withdrawals_opens_no_more_sockets_than_the_limit_and_every_one_is_done(
        self, sim, gateways
    ):
        _, client = await gateways(client_sessions=2)
        logins = [f"CR50000{n:02d}" for n in range(8)]
        prepared = [await self._ready_to_withdraw(sim, client, loginid) for loginid in logins]
        sim.response_delay_ms = (20, 20)  # each session lasts a while: the burst has to queue for the two slots
        sim.peak_connection_count = sim.connection_count  # the agent's socket
        references = [ref() for _ in prepared]
        results = await asyncio.gather(
            *(client.withdraw(reference=r, **kwargs) for r, kwargs in zip(references, prepared, strict=True))
        )
        assert [r.outcome for r in results] == [Outcome.DONE] * len(prepared)
        assert sim.peak_connection_count == 1 + 2  # the agent's socket and two users' at most
        for loginid, reference in zip(logins, references, strict=True):
            assert sim.balance_cents(loginid) == 1_000_000 - 100
            assert len(entries_for(sim, reference)) == 1

    async def test_a_withdrawal_that_finds_every_session_busy_too_long_sends_nothing_and_can_be_repeated(
        self, sim, gateways
    ):
        _, client = await gateways(client_sessions=1, tuning=replace(FAST, client_session_wait_s=0.1))
        logins = ("CR5100001", "CR5100002")
        prepared = [await self._ready_to_withdraw(sim, client, loginid) for loginid in logins]
        sim.response_delay_ms = (400, 400)  # whichever goes first holds the only session well past the other's wait
        references = [ref(), ref()]
        results = await asyncio.gather(
            *(client.withdraw(reference=r, **kwargs) for r, kwargs in zip(references, prepared, strict=True))
        )
        assert sorted(r.outcome for r in results) == sorted([Outcome.DONE, Outcome.UNAVAILABLE])
        waited = 0 if results[0].outcome is Outcome.UNAVAILABLE else 1
        assert sim.balance_cents(logins[waited]) == 1_000_000  # nothing was sent for it
        assert entries_for(sim, references[waited]) == []
        sim.response_delay_ms = (0, 0)
        again = await client.withdraw(reference=references[waited], **prepared[waited])  # released: safe to repeat
        assert again.outcome is Outcome.DONE
        assert sim.balance_cents(logins[waited]) == 1_000_000 - 100
        assert len(entries_for(sim, references[waited])) == 1


class TestBalance:
    async def test_changes_that_queue_up_are_each_published_in_order(self, redis, prefix):
        tracker = BalanceTracker(redis, stream_key=f"{prefix}:deriv:balance")
        for cents in (1000, 900, 800, 700, 600):  # a batch of transfers' worth, before the publisher runs
            tracker.on_subscription(
                {
                    "msg_type": "balance",
                    "balance": {"loginid": "CR900000", "currency": "USD", "balance": Decimal(cents) / 100},
                }
            )
        publisher = asyncio.create_task(tracker.run())
        try:
            await tracker.drain()
        finally:
            publisher.cancel()
        events = await redis.xrange(f"{prefix}:deriv:balance")
        assert [int(fields[b"balance_cents"]) for _, fields in events] == [1000, 900, 800, 700, 600]
        assert {fields[b"type"] for _, fields in events} == {b"deriv.balance_changed"}

    async def test_get_balance_and_balance_changes_are_published_to_the_stream(self, sim, gateways, redis, prefix):
        runtime, client = await gateways()
        assert await client.balance() == usd(100_000_000)
        await client.transfer(reference=ref(), loginid=DerivLoginId("CR1234567"), amount=usd(250))
        await eventually(
            lambda: runtime.balances.last is not None and runtime.balances.last.balance_cents < 100_000_000
        )
        assert await client.balance() == usd(100_000_000 - 250)
        await runtime.balances.drain()
        events = await redis.xrange(f"{prefix}:deriv:balance")
        assert [int(fields[b"balance_cents"]) for _, fields in events][-1] == 100_000_000 - 250
        assert events[-1][1][b"type"] == b"deriv.balance_changed"

    async def test_after_a_drop_the_gateway_reconnects_and_resubscribes(self, sim, gateways):
        runtime, client = await gateways()
        await eventually(lambda: sim.subscription_count == 1)
        await sim.drop_connections()
        await eventually(lambda: runtime.connection.connects == 2 and sim.subscription_count == 1)
        assert await runtime.wait_active(5)
        assert (
            await client.transfer(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))
        ).outcome is Outcome.DONE


class TestMetrics:
    async def test_the_metrics_say_who_is_active_and_count_the_calls_and_derivs_answers(self, sim, gateways):
        active, client = await gateways()
        standby, standby_client = await gateways(wait_active=False)
        await client.transfer(reference=ref(), loginid=DerivLoginId("CR1234567"), amount=usd(100))
        await client.transfer(reference=ref(), loginid=DerivLoginId("CR9000001"), amount=usd(100))  # refused
        await standby_client.transfer(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))
        async with httpx.AsyncClient(timeout=3) as http:
            page = await http.get(f"http://127.0.0.1:{active.health_http.port}/metrics")
            standby_page = await http.get(f"http://127.0.0.1:{standby.health_http.port}/metrics")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
        got = samples(page.text)
        assert got[("penpay_gateway_active", ())] == 1
        assert got[("penpay_gateway_lease_held", ())] == 1
        assert got[("penpay_gateway_deriv_ready", ())] == 1
        assert got[("penpay_gateway_deriv_connects_total", ())] >= 1
        assert got[("penpay_gateway_calls_total", (("rpc", "Transfer"), ("status", "OK")))] == 2
        assert got[("penpay_gateway_money_answers_total", (("kind", "transfer"), ("outcome", "done")))] == 1
        assert got[("penpay_gateway_money_answers_total", (("kind", "transfer"), ("outcome", "rejected")))] == 1
        standby_got = samples(standby_page.text)
        assert standby_got[("penpay_gateway_active", ())] == 0
        assert standby_got[("penpay_gateway_calls_total", (("rpc", "Transfer"), ("status", "UNAVAILABLE")))] == 1


class TestSingleLiveGateway:
    async def test_a_standby_does_not_serve_until_the_active_one_stops(self, sim, gateways):
        active, _ = await gateways()
        standby, standby_client = await gateways(wait_active=False)
        await asyncio.sleep(1.2)  # longer than the lease TTL: the active one keeps renewing
        assert not standby.service.active
        with pytest.raises(DerivGatewayUnavailable):
            await standby_client.balance()
        limited = await standby_client.transfer(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))
        assert limited.outcome is Outcome.UNAVAILABLE
        async with httpx.AsyncClient(timeout=3) as http:
            assert (await http.get(f"http://127.0.0.1:{active.health_http.port}/readyz")).status_code == 200
            assert (await http.get(f"http://127.0.0.1:{standby.health_http.port}/readyz")).status_code == 503
            assert (await http.get(f"http://127.0.0.1:{standby.health_http.port}/healthz")).status_code == 200
        assert await _grpc_health(standby.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _grpc_health(active.grpc_port) == health_pb2.HealthCheckResponse.SERVING

        await active.stop()
        assert await standby.wait_active(5)
        assert standby.lease.fencing_token > active.lease.fencing_token or active.lease.fencing_token == 0
        result = await standby_client.transfer(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))
        assert result.outcome is Outcome.DONE

    async def test_a_gateway_that_loses_its_lease_stops_serving_money_calls(self, gateways, redis):
        runtime, client = await gateways()
        await redis.delete(runtime.lease.key)
        await redis.set(runtime.lease.key, "someone-else:999", px=5000)
        await eventually(lambda: not runtime.service.active, timeout_s=3)
        result = await client.transfer(reference=ref(), loginid=DerivLoginId("CR1"), amount=usd(1))
        assert result.outcome is Outcome.UNAVAILABLE


async def _grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service="penpay.gateway.v1.DerivGateway"), timeout=3)
        return int(answer.status)
