"""The gRPC servicer of ``penpay.gateway.v1.DerivGateway``: maps the executor's results and errors to the wire.

Status codes: UNAVAILABLE = nothing was sent (standby, Deriv socket down, rate limited; retry with the same
reference), INVALID_ARGUMENT = malformed request, FAILED_PRECONDITION = reference reused for other money.
Money outcomes (DONE / REJECTED / UNKNOWN) travel in the response, never as a status.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb
from penpay._proto.penpay.gateway.v1 import gateway_pb2_grpc
from penpay.gateway.balances import BalanceTracker
from penpay.gateway.client_sessions import ClientSessions
from penpay.gateway.connection import DerivConnection
from penpay.gateway.lease import RedisLease
from penpay.gateway.records import LeaseLostError, MoneyResult, Outcome
from penpay.gateway.tokens import TokenDecryptionError, TokenVault
from penpay.gateway.transfers import (
    InvalidRequestError,
    ReferenceConflictError,
    TransferExecutor,
    UnavailableError,
)
from penpay.gateway.wire import DerivCallError, DerivRejectedError
from penpay.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")
Req = TypeVar("Req")
MAX_BATCH = 256  # transfers per TransferBatch call, withdrawals per WithdrawBatch call (the proto says so)
Context = grpc.aio.ServicerContext[Any, Any]

_OUTCOMES = {
    Outcome.DONE: pb.OUTCOME_DONE,
    Outcome.REJECTED: pb.OUTCOME_REJECTED,
    Outcome.UNKNOWN: pb.OUTCOME_UNKNOWN,
}


async def _each_of_batch(
    requests: Sequence[Req], run: Callable[[Req], Awaitable[object]], result: Callable[..., T]
) -> list[T]:
    """A batch call's members, each run concurrently as its own call runs it (``run``), each answered on its own, in
    order: a status its own call would have ended with is that member's (``result``'s status), and the others go
    on. More than ``MAX_BATCH`` members: INVALID_ARGUMENT for the call, and none is run."""
    if len(requests) > MAX_BATCH:
        raise InvalidRequestError(f"at most {MAX_BATCH} per batch, not {len(requests)}")

    async def member(request: Req) -> T:
        with structlog.contextvars.bound_contextvars(transaction_id=getattr(request, "reference", "") or None):
            try:
                response = await run(request)
            except Exception as exc:  # this member's own failure: the others of the batch go on
                code = _status_for(exc)
                if code is None:  # an internal error, as its own call would end: the outcome is unknown
                    log.exception("gateway.batch_member_failed")
                    code = grpc.StatusCode.INTERNAL
                return result(status_code=code.value[0], status_details=str(exc))
            return result(response=response)

    return list(await asyncio.gather(*(member(r) for r in requests)))


class DerivGatewayService(gateway_pb2_grpc.DerivGatewayServicer):
    def __init__(
        self,
        *,
        executor: TransferExecutor,
        balances: BalanceTracker,
        connection: DerivConnection,
        sessions: ClientSessions,
        lease: RedisLease,
        tokens: TokenVault,
    ) -> None:
        self._executor = executor
        self._balances = balances
        self._connection = connection
        self._sessions = sessions
        self._lease = lease
        self._tokens = tokens
        # for /metrics: calls by rpc and how they ended, money answers by rpc and outcome (counts since the start)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()

    @property
    def active(self) -> bool:
        """Serving money calls: the lease is held and the agent socket is authorised."""
        return self._lease.is_held() and self._connection.ready

    async def Transfer(self, request: pb.TransferRequest, context: Context) -> pb.TransferResponse:  # noqa: N802
        return await self._serve(context, lambda: self._transfer(request), reference=request.reference, rpc="Transfer")

    async def TransferBatch(  # noqa: N802
        self, request: pb.TransferBatchRequest, context: Context
    ) -> pb.TransferBatchResponse:
        async def run() -> pb.TransferBatchResponse:
            results = await _each_of_batch(request.transfers, self._transfer, pb.TransferBatchResult)
            return pb.TransferBatchResponse(results=results)

        return await self._serve(context, run, rpc="TransferBatch")

    async def _transfer(self, request: pb.TransferRequest) -> pb.TransferResponse:
        result = await self._executor.transfer(
            reference=request.reference,
            loginid=request.loginid,
            amount_cents=request.amount_cents,
            currency=request.currency,
        )
        self.outcomes[("transfer", result.outcome.value)] += 1
        return pb.TransferResponse(client_full_name=result.client_full_name, **_money_fields(result))

    async def Withdraw(self, request: pb.WithdrawRequest, context: Context) -> pb.WithdrawResponse:  # noqa: N802
        return await self._serve(context, lambda: self._withdraw(request), reference=request.reference, rpc="Withdraw")

    async def WithdrawBatch(  # noqa: N802
        self, request: pb.WithdrawBatchRequest, context: Context
    ) -> pb.WithdrawBatchResponse:
        async def run() -> pb.WithdrawBatchResponse:
            results = await _each_of_batch(request.withdrawals, self._withdraw, pb.WithdrawBatchResult)
            return pb.WithdrawBatchResponse(results=results)

        return await self._serve(context, run, rpc="WithdrawBatch")

    async def _withdraw(self, request: pb.WithdrawRequest) -> pb.WithdrawResponse:
        result = await self._executor.withdraw(
            reference=request.reference,
            loginid=request.loginid,
            encrypted_token=request.encrypted_token,
            amount_cents=request.amount_cents,
            currency=request.currency,
            verification_code=request.verification_code,
        )
        self.outcomes[("withdraw", result.outcome.value)] += 1
        return pb.WithdrawResponse(**_money_fields(result))

    async def RequestWithdrawalCode(  # noqa: N802
        self, request: pb.RequestWithdrawalCodeRequest, context: Context
    ) -> pb.RequestWithdrawalCodeResponse:
        async def run() -> pb.RequestWithdrawalCodeResponse:
            token = self._tokens.decrypt(request.encrypted_token)
            try:
                async with self._sessions.open(token, loginid=request.loginid or None) as (socket, account):
                    await socket.call(
                        {"verify_email": account["email"], "type": "paymentagent_withdraw"},
                        timeout_s=self._sessions.timeout_s,
                    )
            except DerivRejectedError as exc:
                return pb.RequestWithdrawalCodeResponse(
                    outcome=pb.OUTCOME_REJECTED, error_code=exc.code, error_message=exc.message
                )
            return pb.RequestWithdrawalCodeResponse(outcome=pb.OUTCOME_DONE)

        return await self._serve(context, run, rpc="RequestWithdrawalCode")

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Context) -> pb.GetBalanceResponse:  # noqa: N802
        async def run() -> pb.GetBalanceResponse:
            balance = await self._balances.get(self._connection)
            return pb.GetBalanceResponse(
                loginid=balance.loginid,
                currency=balance.currency,
                balance_cents=balance.balance_cents,
                as_of_unix_ms=balance.as_of_unix_ms,
            )

        return await self._serve(context, run, rpc="GetBalance")

    async def FindTransfer(  # noqa: N802
        self, request: pb.FindTransferRequest, context: Context
    ) -> pb.FindTransferResponse:
        async def run() -> pb.FindTransferResponse:
            found = await self._executor.settle(request.reference)
            if found is None:
                return pb.FindTransferResponse(found=False)
            return pb.FindTransferResponse(
                found=True,
                transaction_id=found.transaction_id,
                amount_cents=found.amount_cents,
                transaction_time=found.transaction_time,
                longcode=found.longcode,
            )

        return await self._serve(context, run, reference=request.reference, rpc="FindTransfer")

    async def LinkAccount(  # noqa: N802
        self, request: pb.LinkAccountRequest, context: Context
    ) -> pb.LinkAccountResponse:
        async def run() -> pb.LinkAccountResponse:
            if not request.token:
                raise InvalidRequestError("token is required")
            try:
                async with self._sessions.open(request.token) as (_, account):
                    pass
            except DerivRejectedError as exc:
                return pb.LinkAccountResponse(
                    outcome=pb.OUTCOME_REJECTED, error_code=exc.code, error_message=exc.message
                )
            return pb.LinkAccountResponse(
                outcome=pb.OUTCOME_DONE,
                loginid=str(account.get("loginid", "")),
                currency=str(account.get("currency", "")),
                email=str(account.get("email", "")),
                fullname=str(account.get("fullname", "")),
                is_virtual=bool(account.get("is_virtual", 0)),
                scopes=[str(s) for s in account.get("scopes", [])],
                encrypted_token=self._tokens.encrypt(request.token),
            )

        return await self._serve(context, run, rpc="LinkAccount")

    async def _serve(self, context: Context, run: Callable[[], Awaitable[T]], *, rpc: str, reference: str = "") -> T:
        with structlog.contextvars.bound_contextvars(transaction_id=reference or None, rpc=rpc):
            if self._lease.is_held() and not self._connection.ready:
                # A reconnect takes well under a second; ride it out rather than bounce the caller.
                await self._connection.wait_ready(min(self._connection.call_timeout_s, 2.0))
            if not self.active:
                self.calls[(rpc, grpc.StatusCode.UNAVAILABLE.name)] += 1
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "the gateway is not active (standby or Deriv down)")
            try:
                answer = await run()
            except Exception as exc:
                code = _status_for(exc)
                self.calls[(rpc, (code or grpc.StatusCode.INTERNAL).name)] += 1
                if code is None:
                    raise
                await _abort(context, code, str(exc))
            self.calls[(rpc, grpc.StatusCode.OK.name)] += 1
            return answer


def _status_for(exc: Exception) -> grpc.StatusCode | None:
    """The status a call ends with for an error of the executor (None: not one of them, an internal error)."""
    if isinstance(exc, InvalidRequestError | TokenDecryptionError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, ReferenceConflictError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, UnavailableError | LeaseLostError | DerivCallError):
        log.warning("gateway.unavailable", error=str(exc))
        return grpc.StatusCode.UNAVAILABLE
    return None


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("abort() returned")  # pragma: no cover


def _money_fields(result: MoneyResult) -> dict[str, Any]:
    return {
        "outcome": _OUTCOMES[result.outcome],
        "transaction_id": result.transaction_id,
        "error_code": result.error_code,
        "error_message": result.error_message,
        "refused_by": result.refused_by,
    }
