"""Commands: imperative requests into the application, one frozen dataclass each. Built by the API from
validated input; carried to handlers unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from penpay_domain.ids import DerivLoginId, IdempotencyKey, TransactionId, UserId
from penpay_domain.money import Money
from penpay_domain.msisdn import Msisdn
from penpay_domain.transaction import Status


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiateDeposit:
    user_id: UserId
    amount: Money  # KES
    msisdn: Msisdn
    deriv_loginid: DerivLoginId
    idempotency_key: IdempotencyKey


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiateWithdrawal:
    user_id: UserId
    amount: Money  # USD
    msisdn: Msisdn
    deriv_loginid: DerivLoginId
    verification_code: str
    idempotency_key: IdempotencyKey


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveReview:
    transaction_id: TransactionId
    status: Status
    admin: str
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryReview:
    transaction_id: TransactionId
    status: Status
    admin: str
