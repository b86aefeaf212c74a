"""API test fixtures: the real app over ``httpx.ASGITransport`` against the real MariaDB and Redis of the session,
with a fake of the Deriv gateway (a provider) and tokens minted like ``penpay token`` does."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis

from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.deriv_gateway import DerivTokenRejected
from penpay.adapters.fx import StaticFxQuotes
from penpay.adapters.tokens import SecretBox
from penpay.api.app import create_app
from penpay.api.deps import Adapters
from penpay.bootstrap import Database
from penpay.cli import mint_token
from penpay.settings import Settings
from penpay_domain import ledger, ports
from penpay_domain.ids import DerivLoginId
from penpay_domain.money import Money
from penpay_domain.providers import (
    DerivAccount,
    DerivTransferOrder,
    DerivTransferResult,
    DerivWithdrawalOrder,
    Outcome,
)
from tests.fakes import transfer_each, withdraw_each

CLIENT_IP = "127.0.0.1"
USER_TOKEN_PREFIX = "sandbox-user-token-"


@dataclass
class FakeDerivGateway:
    """The Deriv gateway as the API sees it: tokens ``sandbox-user-token-<LOGINID>`` are valid."""

    code_requests: list[DerivLoginId] = field(default_factory=list)
    code_outcome: Outcome = Outcome.DONE
    agent_balance: Money = field(default_factory=lambda: Money.usd_cents(1_000_000_00))

    async def link_account(self, *, token: str) -> tuple[DerivAccount, bytes]:
        if not token.startswith(USER_TOKEN_PREFIX):
            raise DerivTokenRejected("Deriv refused the token: InvalidToken The token is invalid.")
        loginid = token.removeprefix(USER_TOKEN_PREFIX)
        account = DerivAccount(loginid=loginid, currency="USD", email=f"{loginid.lower()}@sandbox.deriv.test")
        return account, b"fernet:" + secrets.token_bytes(16)

    async def request_withdrawal_code(self, *, loginid: DerivLoginId, token_ciphertext: bytes) -> Outcome:
        assert token_ciphertext.startswith(b"fernet:")
        self.code_requests.append(loginid)
        return self.code_outcome

    async def transfer_many(self, orders: Sequence[DerivTransferOrder]) -> list[DerivTransferResult | Exception]:
        return await transfer_each(self, orders)

    async def transfer(self, *, reference: str, loginid: DerivLoginId, amount: Money) -> DerivTransferResult:
        return DerivTransferResult(outcome=Outcome.DONE, deriv_transaction_id="1")

    async def withdraw(
        self, *, reference: str, loginid: DerivLoginId, token_ciphertext: bytes, amount: Money, verification_code: str
    ) -> DerivTransferResult:
        return DerivTransferResult(outcome=Outcome.DONE, deriv_transaction_id="2")

    async def withdraw_many(self, orders: Sequence[DerivWithdrawalOrder]) -> list[DerivTransferResult | Exception]:
        return await withdraw_each(self, orders)

    async def find_transfer(self, *, reference: str) -> DerivTransferResult:
        return DerivTransferResult(outcome=Outcome.REJECTED, error_code="NotFound")

    async def balance(self) -> Money:
        return self.agent_balance


_: ports.DerivGateway = FakeDerivGateway()

GENEROUS = {
    "rate_limit_ip_per_min": 1_000_000,
    "rate_limit_user_per_min": 1_000_000,
    "rate_limit_callback_per_min": 1_000_000,
}


@pytest.fixture(scope="session")
async def funded(db: Database) -> None:
    """Floats for the whole worker: 1,000,000.00 USD of Deriv agent balance and 100,000,000 KES of B2C money.
    Funding is idempotent by reference, and tests assert deltas (the chart is shared)."""
    async with db.uow() as uow:
        await uow.ledger.apply(ledger.funding("fund:api-tests:agent", ledger.DERIV_AGENT, Money.usd_cents(10**8)))
        await uow.ledger.apply(ledger.funding("fund:api-tests:b2c", ledger.MPESA_DISBURSEMENTS, Money.kes(100_000_000)))
        await uow.commit()


@dataclass
class Api:
    client: httpx.AsyncClient
    settings: Settings
    gateway: FakeDerivGateway

    def token(self, sub: str, role: str | None = None) -> str:
        return mint_token(self.settings, sub=sub, role=role)

    def auth(self, sub: str, role: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role)}", **extra}


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(
    settings: Settings, db: Database, redis_client: aioredis.Redis, funded: None
) -> AsyncIterator[MakeApi]:
    """Build an app with setting overrides and a client address; every client is closed after the test."""
    clients: list[httpx.AsyncClient] = []

    async def build(client_ip: str = CLIENT_IP, redis: aioredis.Redis | None = None, **overrides: Any) -> Api:
        effective = settings.model_copy(update={**GENEROUS, **overrides})
        gateway = FakeDerivGateway()
        adapters = Adapters(
            db=db, redis=redis or redis_client, fx=StaticFxQuotes.from_settings(effective), gateway=gateway
        )
        app = create_app(effective, adapters)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(client_ip, 51000)), base_url="http://testserver"
        )
        clients.append(client)
        return Api(client, effective, gateway)

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


def new_user() -> str:
    return f"user-{secrets.token_hex(6)}"


def new_key() -> str:
    return f"key-{secrets.token_hex(8)}"


@pytest.fixture
def intake_uow(db: Database, settings: Settings) -> SqlIntakeUnitOfWork:
    """A unit of work like the API's (and the workers'), for arranging and inspecting state directly."""
    return SqlIntakeUnitOfWork(db.engine, db.clock, SecretBox.from_settings(settings))


async def stream_fields(redis: aioredis.Redis, key: str, count: int = 200) -> list[dict[bytes, bytes]]:
    """The newest entries' fields of a stream."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrevrange(key, count=count))
    return [fields for _, fields in entries]
