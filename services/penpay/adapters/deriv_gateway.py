"""The gRPC client of the Deriv gateway, implementing ``penpay_domain.ports.DerivGateway``.

Every call has a deadline. Results map to the domain's ``Outcome``:

- the gateway's DONE / REJECTED / UNKNOWN pass through (REJECTED keeps Deriv's error code and message);
- gRPC ``UNAVAILABLE`` (standby, Deriv down, rate limited: nothing was sent) -> ``UNAVAILABLE``, safe to retry;
- any other failure of a money call (deadline exceeded, connection reset mid-call, ...) -> ``UNKNOWN``: the
  request may have reached the gateway. Repeating it with the SAME reference is always safe (the gateway answers
  from its record or from Deriv's statement and never transfers twice); a new reference for the same money is not.

``find_transfer`` answers DONE (with Deriv's transaction id) when the reference is in the agent's statement, and
``REJECTED`` with ``error_code="NotFound"`` when it is not; treat NotFound as final only once the transfer's
reconcile window (``PENPAY_RECONCILE_AFTER_S``) has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb
from penpay._proto.penpay.gateway.v1 import gateway_pb2_grpc
from penpay_domain import ports
from penpay_domain.errors import DomainError, InvalidInput
from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Currency, Money
from penpay_domain.providers import DerivAccount, DerivTransferResult, Outcome

T = TypeVar("T")

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
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._stub: Any = gateway_pb2_grpc.DerivGatewayStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self._money_timeout_s = money_timeout_s

    async def close(self) -> None:
        await self._channel.close(grace=None)

    # ---------------------------------------------------------------- money
    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult:
        request = pb.TransferRequest(
            reference=reference, loginid=loginid, amount_cents=_usd_cents(amount), currency=amount.currency.value
        )
        return await self._money(lambda: self._stub.Transfer(request, timeout=self._money_timeout_s))

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
        outcome = _OUTCOMES.get(response.outcome, Outcome.UNKNOWN)
        return DerivTransferResult(
            outcome=outcome,
            deriv_transaction_id=str(response.transaction_id) if outcome is Outcome.DONE else None,
            error_code=response.error_code or None,
            message=response.error_message,
        )

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            _raise_for_request_error(exc)
            raise DerivGatewayUnavailable(f"Deriv gateway: {exc.code().name} {exc.details()}") from exc


def _usd_cents(amount: Money) -> int:
    if amount.currency is not Currency.USD:
        raise InvalidInput(f"Deriv transfers are in USD, not {amount.currency.value}")
    return amount.minor


def _failure_outcome(exc: grpc.aio.AioRpcError) -> Outcome:
    # UNAVAILABLE is what the gateway answers when nothing was sent (and what the channel reports when it could
    # not connect). Anything else may have happened after the request reached the gateway.
    return Outcome.UNAVAILABLE if exc.code() is grpc.StatusCode.UNAVAILABLE else Outcome.UNKNOWN


def _raise_for_request_error(exc: grpc.aio.AioRpcError) -> None:
    if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        raise DerivGatewayRequestError(f"{exc.code().name}: {exc.details()}") from exc


_: type[ports.DerivGateway] = GrpcDerivGateway
