"""Fakes of the *providers* (Daraja, the Deriv gateway, SMTP) for service-layer tests. Our own MySQL and Redis are
never faked. Each fake implements its domain port without inheriting; the ``_:`` lines let mypy check conformance."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from penpay.adapters.mailer import MailNotSent
from penpay_domain import ports
from penpay_domain.ids import DerivLoginId, PayoutId, TransactionId
from penpay_domain.money import Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.providers import (
    DerivAccount,
    DerivTransferOrder,
    DerivTransferResult,
    DerivWithdrawalOrder,
    Outcome,
    PaymentResult,
    PaymentStatus,
    PayoutRequestResult,
    StkPushResult,
)

_ids = itertools.count(1)
OrderT = TypeVar("OrderT", DerivTransferOrder, DerivWithdrawalOrder)


async def answer_each(
    orders: Sequence[OrderT], call: Callable[[OrderT], Awaitable[DerivTransferResult]]
) -> list[DerivTransferResult | Exception]:
    """A batch call (``transfer_many``, ``withdraw_many``) as a fake gateway answers it: each order by ``call``, on
    its own; an exception is that order's answer, as the gateway's client answers a batch."""
    results: list[DerivTransferResult | Exception] = []
    for o in orders:
        try:
            results.append(await call(o))
        except Exception as exc:
            results.append(exc)
    return results


async def transfer_each(
    gateway: ports.DerivGateway, orders: Sequence[DerivTransferOrder]
) -> list[DerivTransferResult | Exception]:
    """``transfer_many`` by the fake's ``transfer``."""
    return await answer_each(
        orders, lambda o: gateway.transfer(reference=o.reference, loginid=o.loginid, amount=o.amount)
    )


async def withdraw_each(
    gateway: ports.DerivGateway, orders: Sequence[DerivWithdrawalOrder]
) -> list[DerivTransferResult | Exception]:
    """``withdraw_many`` by the fake's ``withdraw``."""
    return await answer_each(
        orders,
        lambda o: gateway.withdraw(
            reference=o.reference,
            loginid=o.loginid,
            token_ciphertext=o.token_ciphertext,
            amount=o.amount,
            verification_code=o.verification_code,
        ),
    )


@dataclass
class FakeMpesa:
    stk_outcome: Outcome = Outcome.DONE
    query_result: PaymentResult = field(
        default_factory=lambda: PaymentResult(status=PaymentStatus.PENDING, result_code="pending")
    )
    b2c_outcome: Outcome = Outcome.DONE
    b2c_duplicate: bool = False
    pushes: list[tuple[TransactionId, Money, Msisdn, str]] = field(default_factory=list)
    payouts: list[tuple[PayoutId, Money, Msisdn, str]] = field(default_factory=list)
    status_queries: list[PayoutId] = field(default_factory=list)
    is_ready: bool = True  # False: Daraja could not be asked now (no access token)

    async def ready(self) -> bool:
        return self.is_ready

    async def stk_push(
        self, *, txn_id: TransactionId, amount: Money, msisdn: Msisdn, callback_url: str
    ) -> StkPushResult:
        self.pushes.append((txn_id, amount, msisdn, callback_url))
        if self.stk_outcome is Outcome.DONE:
            return StkPushResult(outcome=Outcome.DONE, checkout_request_id=f"ws_CO_{next(_ids)}")
        if self.stk_outcome is Outcome.REJECTED:
            return StkPushResult(outcome=Outcome.REJECTED, error_code="400.002.02", message="Invalid PhoneNumber")
        return StkPushResult(outcome=self.stk_outcome, message="scripted")

    async def stk_query(self, *, checkout_request_id: str) -> PaymentResult:
        return self.query_result

    async def b2c_payout(
        self, *, payout_id: PayoutId, amount: Money, msisdn: Msisdn, remarks: str, result_url: str, timeout_url: str
    ) -> PayoutRequestResult:
        self.payouts.append((payout_id, amount, msisdn, result_url))
        if self.b2c_duplicate:
            return PayoutRequestResult(outcome=Outcome.REJECTED, duplicate=True, error_code="500.002.1001")
        if self.b2c_outcome is Outcome.DONE:
            return PayoutRequestResult(outcome=Outcome.DONE, conversation_id=f"AG_{next(_ids)}")
        if self.b2c_outcome is Outcome.REJECTED:
            return PayoutRequestResult(outcome=Outcome.REJECTED, error_code="400.002.02", message="Invalid Amount")
        return PayoutRequestResult(outcome=self.b2c_outcome)

    async def transaction_status(self, *, payout_id: PayoutId, result_url: str, timeout_url: str) -> Outcome:
        self.status_queries.append(payout_id)
        return Outcome.DONE


@dataclass
class FakeDeriv:
    """Executes each reference once, like the gateway; ``script`` sets the answer per login id."""

    outcome: Outcome = Outcome.DONE
    executed: dict[str, Money] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    rejection: DerivTransferResult = field(
        default_factory=lambda: DerivTransferResult(
            outcome=Outcome.REJECTED, error_code="PaymentAgentTransferError", message="no"
        )
    )  # the answer when ``outcome`` is REJECTED

    def _answer(self, reference: str, amount: Money) -> DerivTransferResult:
        self.calls.append(reference)
        if self.outcome is Outcome.DONE:
            self.executed.setdefault(reference, amount)
            return DerivTransferResult(outcome=Outcome.DONE, deriv_transaction_id=str(1000 + len(self.executed)))
        if self.outcome is Outcome.REJECTED:
            return self.rejection
        return DerivTransferResult(outcome=self.outcome)

    async def transfer_many(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        return await transfer_each(self, orders)

    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult:
        return self._answer(reference, amount)

    async def withdraw(
        self, *, reference: str, loginid: DerivLoginId, token_ciphertext: bytes, amount: Money, verification_code: str
    ) -> DerivTransferResult:
        return self._answer(reference, amount)

    async def withdraw_many(self, orders: Sequence[DerivWithdrawalOrder]) -> list[DerivTransferResult | Exception]:
        return await withdraw_each(self, orders)

    async def request_withdrawal_code(self, *, loginid: DerivLoginId, token_ciphertext: bytes) -> Outcome:
        return Outcome.DONE

    async def find_transfer(self, *, reference: str) -> DerivTransferResult:
        if reference in self.executed:
            return DerivTransferResult(outcome=Outcome.DONE, deriv_transaction_id="999")
        return DerivTransferResult(outcome=Outcome.REJECTED, error_code="NotFound")

    async def balance(self) -> Money:
        return Money.usd_cents(100_000_000)

    async def link_account(self, *, token: str) -> tuple[DerivAccount, bytes]:
        loginid = token.rsplit("-", 1)[-1]
        return DerivAccount(loginid=loginid, currency="USD", email=f"{loginid.lower()}@example.test"), b"sealed"


@dataclass
class FakeMailer:
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients whose mail the server refuses

    async def send(self, *, to: str, subject: str, body: str) -> None:
        if to in self.refuse:
            raise MailNotSent(f"mail to {to!r} refused")
        self.sent.append((to, subject, body))

    async def send_many(self, mails: Sequence[ports.Mail]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for mail in mails:
            try:
                await self.send(to=mail.to, subject=mail.subject, body=mail.body)
            except MailNotSent as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes


class FakeCallbackUrls:
    def stk(self, txn_id: TransactionId) -> str:
        return f"http://127.0.0.1:8000/hooks/stk/{txn_id}/token"

    def b2c_result(self, txn_id: TransactionId) -> str:
        return f"http://127.0.0.1:8000/hooks/b2c/result/{txn_id}/token"

    def b2c_timeout(self, txn_id: TransactionId) -> str:
        return f"http://127.0.0.1:8000/hooks/b2c/timeout/{txn_id}/token"

    def status_result(self, txn_id: TransactionId) -> str:
        return f"http://127.0.0.1:8000/hooks/status/result/{txn_id}/token"

    def status_timeout(self, txn_id: TransactionId) -> str:
        return f"http://127.0.0.1:8000/hooks/status/timeout/{txn_id}/token"


_m: ports.Mpesa = FakeMpesa()
_d: ports.DerivGateway = FakeDeriv()
_x: ports.Mailer = FakeMailer()
