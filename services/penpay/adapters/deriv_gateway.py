"""The gRPC client of the Deriv gateway, implementing ``penpay_domain.ports.DerivGateway``.

Every call has a deadline. Results map to the domain's ``Outcome``:

- the gateway's DONE / REJECTED / UNKNOWN pass through (REJECTED keeps Deriv's error code and message);
- gRPC ``UNAVAILABLE`` (standby, Deriv down, rate limited: nothing was sent) -> ``UNAVAILABLE``, safe to retry;
- any other failure of a money call (deadline exceeded, connection reset mid-call, ...) -> ``UNKNOWN``: the
  request may have reached the gateway. Repeating it with the SAME reference is always safe (the gateway answers
  from its record or from Deriv's statement and never transfers twice); a new reference for the same money is not.

``transfer_many`` sends several transfers in one ``TransferBatch`` call (a worker's batch of credits: one call
instead of one per deposit), each mapped as above on its own; a failure of the whole call maps as above for each.

``find_transfer`` answers DONE (with Deriv's transaction id) when the reference is in the agent's statement, and
``REJECTED`` with ``error_code="NotFound"`` when it is not; treat NotFound as final only once the transfer's
reconcile window (``PENPAY_RECONCILE_AFTER_S``) has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb
from penpay._proto.penpay.gateway.v1 import gateway_pb2_grpc
from penpay.logging import get_logger
from penpay_domain import ports
from penpay_domain.errors import DomainError, InvalidInput
from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Currency, Money
from penpay_domain.providers import DerivAccount, DerivTransferOrder, DerivTransferResult, Outcome

T = TypeVar("T")
log = get_logger(__name__)

_OUTCOMES = {
    pb.OUTCOME_DONE: Outcome.DONE,
    pb.OUTCOME_REJECTED: Outcome.REJECTED,
    pb.OUTCOME_UNKNOWN: Outcome.UNKNOWN,
}


class DerivGatewayUnavailable(DomainError):
    """The gateway cannot answer now (standby, Deriv down); nothing happened."""

    code = "deriv_unavailable"


class DerivTokenRejected(InvalidInput):
    """Deriv refused the user's token (LinkAccount / RequestWithdrawalCode)."""

    code = "deriv_token_rejected"


class DerivGatewayRequestError(InvalidInput):
    """The gateway refused the request as malformed or as a reused reference (a bug on our side)."""

    code = "deriv_gateway_bad_request"


class GrpcDerivGateway:
    """Async client; one channel, reused. ``close()`` it at shutdown."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 15.0,
        money_timeout_s: float = 30.0,
        batch_size: int = 256,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._stub: Any = gateway_pb2_grpc.DerivGatewayStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self._money_timeout_s = money_timeout_s
        self._batch_size = batch_size  # the gateway's MAX_BATCH
        self._batches = True  # False once the gateway said it has no TransferBatch

    async def close(self) -> None:
        await self._channel.close(grace=None)

    # ---------------------------------------------------------------- money
    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult:
        request = pb.TransferRequest(
            reference=reference, loginid=loginid, amount_cents=_usd_cents(amount), currency=amount.currency.value
        )
        return await self._money(lambda: self._stub.Transfer(request, timeout=self._money_timeout_s))

    async def transfer_many(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        """``TransferBatch``, in calls of at most ``batch_size``: each order's result maps as ``transfer``'s does, its
        own status included; a failure of a whole call maps that way for every order it carried."""
        if not self._batches:
            return await self._transfer_each(orders)
        results: list[DerivTransferResult | Exception] = []
        for start in range(0, len(orders), self._batch_size):
            results += await self._transfer_batch(orders[start : start + self._batch_size])
        return results

    async def _transfer_each(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        """One ``Transfer`` call per order, concurrently: for a gateway older than ``TransferBatch``."""
        answers = await asyncio.gather(
            *(self.transfer(reference=o.reference, loginid=o.loginid, amount=o.amount) for o in orders),
            return_exceptions=True,
        )
        results: list[DerivTransferResult | Exception] = []
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancelled: not an answer
            results.append(answer)
        return results

    async def _transfer_batch(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        request = pb.TransferBatchRequest(
            transfers=[
                pb.TransferRequest(
                    reference=o.reference,
                    loginid=o.loginid,
                    amount_cents=_usd_cents(o.amount),
                    currency=o.amount.currency.value,
                )
                for o in orders
            ]
        )
        try:
            response: pb.TransferBatchResponse = await self._stub.TransferBatch(request, timeout=self._money_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                # a gateway that predates TransferBatch (workers upgraded first): it ran nothing, so each order is
                # sent as a Transfer of its own, now and from now on
                log.warning("gateway_without_transfer_batch", count=len(orders))
                self._batches = False
                return await self._transfer_each(orders)
            try:
                _raise_for_request_error(exc)
            except DerivGatewayRequestError as refused:
                return [refused] * len(orders)
            failed = DerivTransferResult(outcome=_failure_outcome(exc), message=exc.details() or "")
            return [failed] * len(orders)
        if len(response.results) != len(orders):  # not the contract: nothing is known of any of them
            unknown = DerivTransferResult(outcome=Outcome.UNKNOWN, message="the gateway answered another batch")
            return [unknown] * len(orders)
        return [_batch_result(r) for r in response.results]

    async def withdraw(
        self,
        *,
        reference: str,
        loginid: DerivLoginId,
        token_ciphertext: bytes,
        amount: Money,
        verification_code: str,
    ) -> DerivTransferResult:
        request = pb.WithdrawRequest(
            reference=reference,
            loginid=loginid,
            encrypted_token=token_ciphertext,
            amount_cents=_usd_cents(amount),
            currency=amount.currency.value,
            verification_code=verification_code,
        )
        return await self._money(lambda: self._stub.Withdraw(request, timeout=self._money_timeout_s))

    async def find_transfer(self, *, reference: str) -> DerivTransferResult:
        request = pb.FindTransferRequest(reference=reference)
        try:
            response: pb.FindTransferResponse = await self._stub.FindTransfer(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise_for_request_error(exc)
            return DerivTransferResult(outcome=_failure_outcome(exc), message=exc.details() or "")
        if not response.found:
            return DerivTransferResult(
                outcome=Outcome.REJECTED, error_code="NotFound", message="not in the agent's Deriv statement"
            )
        return DerivTransferResult(outcome=Outcome.DONE, deriv_transaction_id=str(response.transaction_id))

    # ---------------------------------------------------------------- accounts
    async def request_withdrawal_code(self, *, loginid: DerivLoginId, token_ciphertext: bytes) -> Outcome:
        request = pb.RequestWithdrawalCodeRequest(loginid=loginid, encrypted_token=token_ciphertext)
        response: pb.RequestWithdrawalCodeResponse = await self._call(
            lambda: self._stub.RequestWithdrawalCode(request, timeout=self._timeout_s)
        )
        return _OUTCOMES.get(response.outcome, Outcome.UNKNOWN)

    async def balance(self) -> Money:
        response: pb.GetBalanceResponse = await self._call(
            lambda: self._stub.GetBalance(pb.GetBalanceRequest(), timeout=self._timeout_s)
        )
        return Money(response.balance_cents, Currency(response.currency))

    async def link_account(self, *, token: str) -> tuple[DerivAccount, bytes]:
        request = pb.LinkAccountRequest(token=token)
        response: pb.LinkAccountResponse = await self._call(
            lambda: self._stub.LinkAccount(request, timeout=self._timeout_s)
        )
        if response.outcome != pb.OUTCOME_DONE:
            raise DerivTokenRejected(f"Deriv refused the token: {response.error_code} {response.error_message}")
        account = DerivAccount(
            loginid=response.loginid, currency=response.currency, email=response.email, fullname=response.fullname
        )
        return account, response.encrypted_token

    # ---------------------------------------------------------------- plumbing
    async def _money(self, call: Callable[[], Awaitable[Any]]) -> DerivTransferResult:
        try:
            response = await call()
        except grpc.aio.AioRpcError as exc:
            _raise_for_request_error(exc)
            return DerivTransferResult(outcome=_failure_outcome(exc), message=exc.details() or "")
        return _money_result(response)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            _raise_for_request_error(exc)
            raise DerivGatewayUnavailable(f"Deriv gateway: {exc.code().name} {exc.details()}") from exc


def _money_result(response: Any) -> DerivTransferResult:
    """A money response (TransferResponse, WithdrawResponse) as the domain's result."""
    outcome = _OUTCOMES.get(response.outcome, Outcome.UNKNOWN)
    return DerivTransferResult(
        outcome=outcome,
        deriv_transaction_id=str(response.transaction_id) if outcome is Outcome.DONE else None,
        error_code=response.error_code or None,
        message=response.error_message,
        refused_by=response.refused_by,
    )


def _batch_result(result: pb.TransferBatchResult) -> DerivTransferResult | Exception:
    """One transfer of a batch: its answer, or the status ``Transfer`` would have ended with, mapped the same way."""
    if result.status_code == grpc.StatusCode.OK.value[0]:
        return _money_result(result.response)
    code = _STATUS_CODES.get(result.status_code, grpc.StatusCode.UNKNOWN)
    if code in _REQUEST_ERRORS:
        return DerivGatewayRequestError(f"{code.name}: {result.status_details}")
    outcome = Outcome.UNAVAILABLE if code is grpc.StatusCode.UNAVAILABLE else Outcome.UNKNOWN
    return DerivTransferResult(outcome=outcome, message=result.status_details)


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
_REQUEST_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


def _usd_cents(amount: Money) -> int:
    if amount.currency is not Currency.USD:
        raise InvalidInput(f"Deriv transfers are in USD, not {amount.currency.value}")
    return amount.minor


def _failure_outcome(exc: grpc.aio.AioRpcError) -> Outcome:
    # UNAVAILABLE is what the gateway answers when nothing was sent (and what the channel reports when it could
    # not connect). Anything else may have happened after the request reached the gateway.
    return Outcome.UNAVAILABLE if exc.code() is grpc.StatusCode.UNAVAILABLE else Outcome.UNKNOWN


def _raise_for_request_error(exc: grpc.aio.AioRpcError) -> None:
    if exc.code() in _REQUEST_ERRORS:
        raise DerivGatewayRequestError(f"{exc.code().name}: {exc.details()}") from exc


_: type[ports.DerivGateway] = GrpcDerivGateway
