"""The gRPC client of the Deriv gateway, implementing ``penpay_domain.ports.DerivGateway``.

Every call has a deadline. Results map to the domain's ``Outcome``:

- the gateway's DONE / REJECTED / UNKNOWN pass through (REJECTED keeps Deriv's error code and message);
- gRPC ``UNAVAILABLE`` (standby, Deriv down, rate limited: nothing was sent) -> ``UNAVAILABLE``, safe to retry;
- any other failure of a money call (deadline exceeded, connection reset mid-call, ...) -> ``UNKNOWN``: the
  request may have reached the gateway. Repeating it with the SAME reference is always safe (the gateway answers
  from its record or from Deriv's statement and never transfers twice); a new reference for the same money is not.

``transfer_many`` sends several transfers in one ``TransferBatch`` call (a worker's batch of credits: one call
instead of one per deposit), each mapped as above on its own; a failure of the whole call maps as above for each.
``withdraw_many`` does the same for a batch of debits with ``WithdrawBatch``. Against a gateway older than a batch
call (UNIMPLEMENTED: it ran nothing), each order goes in a call of its own, from then on.

``find_transfer`` answers DONE (with Deriv's transaction id) when the reference is in the agent's statement, and
``REJECTED`` with ``error_code="NotFound"`` when it is not; treat NotFound as final only once the transfer's
reconcile window (``PENPAY_RECONCILE_AFTER_S``) has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb
from penpay._proto.penpay.gateway.v1 import gateway_pb2_grpc
from penpay.logging import get_logger
from penpay_domain import ports
from penpay_domain.errors import DomainError, InvalidInput
from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Currency, Money
from penpay_domain.providers import (
    DerivAccount,
    DerivTransferOrder,
    DerivTransferResult,
    DerivWithdrawalOrder,
    Outcome,
)

T = TypeVar("T")
Order = TypeVar("Order", DerivTransferOrder, DerivWithdrawalOrder)
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
        self._unbatched: set[str] = set()  # the batch calls the gateway said it does not have

    async def close(self) -> None:
        await self._channel.close(grace=None)

    # ---------------------------------------------------------------- money
    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult:
        return await self._transfer_one(DerivTransferOrder(reference=reference, loginid=loginid, amount=amount))

    async def transfer_many(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        """``TransferBatch``, in calls of at most ``batch_size``: each order's result maps as ``transfer``'s does, its
        own status included; a failure of a whole call maps that way for every order it carried."""
        return await self._many(_TRANSFERS, orders, self._transfer_one)

    async def _transfer_one(self, o: DerivTransferOrder) -> DerivTransferResult:
        return await self._money(lambda: self._stub.Transfer(_transfer_request(o), timeout=self._money_timeout_s))

    async def withdraw(
        self,
        *,
        reference: str,
        loginid: DerivLoginId,
        token_ciphertext: bytes,
        amount: Money,
        verification_code: str,
    ) -> DerivTransferResult:
        return await self._withdraw_one(
            DerivWithdrawalOrder(
                reference=reference,
                loginid=loginid,
                token_ciphertext=token_ciphertext,
                amount=amount,
                verification_code=verification_code,
            )
        )

    async def withdraw_many(self, orders: Sequence[DerivWithdrawalOrder]) -> list[DerivTransferResult | Exception]:
        """``WithdrawBatch``, as ``transfer_many`` is to ``transfer``."""
        return await self._many(_WITHDRAWALS, orders, self._withdraw_one)

    async def _withdraw_one(self, o: DerivWithdrawalOrder) -> DerivTransferResult:
        return await self._money(lambda: self._stub.Withdraw(_withdraw_request(o), timeout=self._money_timeout_s))

    async def _many(
        self, kind: _Batching[Order], orders: Sequence[Order], one: Callable[[Order], Awaitable[DerivTransferResult]]
    ) -> list[DerivTransferResult | Exception]:
        """``kind``'s batch call in calls of at most ``batch_size``, or ``one`` call per order (concurrently) for a
        gateway that has no such batch call."""
        if kind.rpc in self._unbatched:
            return await _each(orders, one)
        results: list[DerivTransferResult | Exception] = []
        for start in range(0, len(orders), self._batch_size):
            results += await self._batch(kind, orders[start : start + self._batch_size], one)
        return results

    async def _batch(
        self, kind: _Batching[Order], orders: Sequence[Order], one: Callable[[Order], Awaitable[DerivTransferResult]]
    ) -> list[DerivTransferResult | Exception]:
        try:
            call = getattr(self._stub, kind.rpc)
            response = await call(kind.request(orders), timeout=self._money_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                # a gateway that predates this batch call (workers upgraded first): it ran nothing, so each order is
                # sent in a call of its own, now and from now on
                log.warning("gateway_without_batch_call", rpc=kind.rpc, count=len(orders))
                self._unbatched.add(kind.rpc)
                return await _each(orders, one)
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


@dataclass(frozen=True, slots=True)
class _Batching(Generic[Order]):
    """A batch call: its name on the stub and how it carries its orders."""

    rpc: str
    request: Callable[[Sequence[Order]], Any]


def _withdraw_request(o: DerivWithdrawalOrder) -> pb.WithdrawRequest:
    return pb.WithdrawRequest(
        reference=o.reference,
        loginid=o.loginid,
        encrypted_token=o.token_ciphertext,
        amount_cents=_usd_cents(o.amount),
        currency=o.amount.currency.value,
        verification_code=o.verification_code,
    )


def _transfer_request(o: DerivTransferOrder) -> pb.TransferRequest:
    return pb.TransferRequest(
        reference=o.reference, loginid=o.loginid, amount_cents=_usd_cents(o.amount), currency=o.amount.currency.value
    )


_TRANSFERS: _Batching[DerivTransferOrder] = _Batching(
    "TransferBatch", lambda orders: pb.TransferBatchRequest(transfers=[_transfer_request(o) for o in orders])
)
_WITHDRAWALS: _Batching[DerivWithdrawalOrder] = _Batching(
    "WithdrawBatch", lambda orders: pb.WithdrawBatchRequest(withdrawals=[_withdraw_request(o) for o in orders])
)


async def _each(
    orders: Sequence[Order], one: Callable[[Order], Awaitable[DerivTransferResult]]
) -> list[DerivTransferResult | Exception]:
    """One call per order, concurrently: for a gateway older than the batch call."""
    answers = await asyncio.gather(*(one(o) for o in orders), return_exceptions=True)
    results: list[DerivTransferResult | Exception] = []
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, Exception):
            raise answer  # cancelled: not an answer
        results.append(answer)
    return results


def _batch_result(result: Any) -> DerivTransferResult | Exception:
    """One member of a batch (``TransferBatchResult``, ``WithdrawBatchResult``): its answer, or the status its own
    call would have ended with, mapped the same way."""
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
