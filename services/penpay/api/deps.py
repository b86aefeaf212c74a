"""The API's wiring: the adapters it is given (or builds), what it derives from settings, and the dependencies
that routes declare (the caller, the admin gate, rate limits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request

from penpay.adapters.db.batch_initiation import SqlInitiationBatches
from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.adapters.db.outbox import PublishedMarks
from penpay.adapters.rate_limit import Budget, RateLimiter
from penpay.adapters.streams import RedisStreamPublisher
from penpay.adapters.tokens import SecretBox
from penpay.api.batch_intake import BatchIntake
from penpay.api.callback_intake import CallbackIntake
from penpay.api.idempotency import IdempotencyGate
from penpay.api.problems import ApiProblem
from penpay.api.security import BEARER_CHALLENGE, Network, Principal, TokenVerifier, client_ip, contains, networks
from penpay.bootstrap import Database
from penpay.logging import get_logger
from penpay.service_layer.batch_initiation import DEPOSITS, WITHDRAWALS
from penpay.service_layer.callbacks import CallbackUrls
from penpay.service_layer.deposits import DepositPolicy
from penpay.settings import Settings
from penpay_domain.fees import NO_FEE, FeePolicy
from penpay_domain.limits import LimitPolicy
from penpay_domain.ports import DerivGateway, FxQuotes

log = get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class Adapters:
    """What the API talks to. Tests pass real MySQL/Redis and a fake of the Deriv gateway (a provider)."""

    db: Database
    redis: aioredis.Redis
    fx: FxQuotes
    gateway: DerivGateway | None = None
    deposit_fees: FeePolicy = NO_FEE
    withdrawal_fees: FeePolicy = NO_FEE


@dataclass(slots=True, kw_only=True)
class ApiState:
    settings: Settings
    adapters: Adapters
    verifier: TokenVerifier
    box: SecretBox
    callback_urls: CallbackUrls
    trusted_proxies: tuple[Network, ...]
    admin_networks: tuple[Network, ...]
    callback_networks: tuple[Network, ...]
    limiter: RateLimiter = field(init=False)
    marks: PublishedMarks = field(init=False)
    publisher: RedisStreamPublisher = field(init=False)
    deposit_intake: BatchIntake = field(init=False)
    withdrawal_intake: BatchIntake = field(init=False)
    callback_intake: CallbackIntake = field(init=False)
    idempotency: IdempotencyGate = field(init=False)
    deposit_policy: DepositPolicy = field(init=False)
    withdrawal_policy: DepositPolicy = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.limiter = RateLimiter(self.adapters.redis, prefix=s.stream_prefix)
        self.marks = PublishedMarks(self.adapters.db.engine, self.adapters.db.clock)
        self.publisher = RedisStreamPublisher(
            self.adapters.redis, prefix=s.stream_prefix, mark_published=self.marks.add
        )
        self.idempotency = IdempotencyGate(lambda: self.uow("api"))
        self.deposit_policy = DepositPolicy(
            limits=LimitPolicy(min_kes=s.deposit_min_kes, max_kes=s.deposit_max_kes, daily_kes=s.daily_limit_kes),
            fees=self.adapters.deposit_fees,
        )
        self.withdrawal_policy = DepositPolicy(
            limits=LimitPolicy(min_kes=s.withdraw_min_kes, max_kes=s.withdraw_max_kes, daily_kes=s.daily_limit_kes),
            fees=self.adapters.withdrawal_fees,
        )
        batches = SqlInitiationBatches(self.adapters.db.engine, self.adapters.db.clock, self.box)
        self.deposit_intake, self.withdrawal_intake = (
            BatchIntake(
                batches,
                rules=rules,
                fx=self.adapters.fx,
                policy=policy,
                publisher=self.publisher,
                max_batch=s.intake_max_batch,
                max_in_flight=s.intake_max_in_flight,
                max_wait_s=s.intake_queue_deadline_ms / 1000,
            )
            for rules, policy in ((DEPOSITS, self.deposit_policy), (WITHDRAWALS, self.withdrawal_policy))
        )
        self.callback_intake = CallbackIntake(
            lambda: self.uow("mpesa"),
            self.publisher,
            max_batch=s.intake_max_batch,
            max_in_flight=s.intake_max_in_flight,
        )

    @classmethod
    def build(cls, settings: Settings, adapters: Adapters) -> ApiState:
        return cls(
            settings=settings,
            adapters=adapters,
            verifier=TokenVerifier(settings),
            box=SecretBox.from_settings(settings),
            callback_urls=CallbackUrls(
                base_url=settings.public_base_url,
                prefix=settings.callback_public_prefix,
                secret=settings.callback_secret.get_secret_value(),
            ),
            trusted_proxies=networks(settings.trusted_proxies),
            admin_networks=networks(settings.admin_allowed_cidrs),
            callback_networks=networks(settings.callback_allowed_ips),
        )

    def uow(self, actor: str, *, snapshot: bool = False) -> SqlIntakeUnitOfWork:
        db = self.adapters.db
        return SqlIntakeUnitOfWork(db.engine, db.clock, self.box, actor=actor[:64], snapshot=snapshot)

    def uow_factory(self, actor: str, *, snapshot: bool = False) -> Callable[[], SqlIntakeUnitOfWork]:
        """Units of work for ``actor``; ``snapshot``: each reads the database as of one moment (``engine.begin``)."""
        return lambda: self.uow(actor, snapshot=snapshot)

    async def aclose(self) -> None:
        """At shutdown: let queued deposits, withdrawals and callbacks commit and pending outbox stamps land."""
        await self.deposit_intake.aclose()
        await self.withdrawal_intake.aclose()
        await self.callback_intake.aclose()
        await self.limiter.aclose()
        await self.marks.aclose()

    def require_gateway(self) -> DerivGateway:
        if self.adapters.gateway is None:
            raise ApiProblem(503, "deriv_unavailable", "the Deriv gateway is not configured")
        return self.adapters.gateway

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted_proxies)

    async def rate_limit(self, *budgets: Budget) -> None:
        """Charge the request to ``budgets`` in one round trip; 429 from the first that refuses it."""
        try:
            decision = await self.limiter.hit_all(budgets)
        except Exception:  # Redis trouble must not take payments down: fail open, loudly
            log.warning(
                "rate limiter unavailable; request let through", buckets=[b.bucket for b in budgets], exc_info=True
            )
            return
        if not decision.allowed:
            raise ApiProblem(
                429,
                "rate_limited",
                f"too many requests; retry in {decision.retry_after_s} s",
                headers={"Retry-After": str(decision.retry_after_s)},
            )


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.penpay
    return state


async def get_state(request: Request) -> ApiState:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hand-off on every request
    return state_of(request)


State = Annotated[ApiState, Depends(get_state)]


async def client_address(request: Request, state: State) -> str:
    """The client's address (``PENPAY_TRUSTED_PROXIES`` decide which ``X-Forwarded-For`` hop), charging nothing."""
    return state.client_ip(request)


Address = Annotated[str, Depends(client_address)]


def _ip_budget(state: ApiState, ip: str) -> Budget:
    return Budget("ip", ip, state.settings.rate_limit_ip_per_min)


async def limit_by_ip(state: State, ip: Address) -> str:
    """Public routes without a caller: a budget per client address (``PENPAY_RATE_LIMIT_IP_PER_MIN``)."""
    await state.rate_limit(_ip_budget(state, ip))
    return ip


ClientIp = Annotated[str, Depends(limit_by_ip)]


async def current_user(state: State, ip: Address, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The bearer token's user. The request is charged to its address's budget and then to the user's
    (``PENPAY_RATE_LIMIT_USER_PER_MIN``), in one round trip; a request without a valid token only to its address's,
    and an address over its budget gets 429 before a bad token gets 401 (tokens cannot be guessed at speed)."""
    try:
        if not authorization:
            raise ApiProblem(401, "unauthenticated", "send Authorization: Bearer <token>", headers=BEARER_CHALLENGE)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiProblem(401, "unauthenticated", "send Authorization: Bearer <token>", headers=BEARER_CHALLENGE)
        principal = state.verifier.verify(token.strip())
    except ApiProblem:
        await state.rate_limit(_ip_budget(state, ip))
        raise
    await state.rate_limit(
        _ip_budget(state, ip), Budget("user", principal.user_id, state.settings.rate_limit_user_per_min)
    )
    return principal


User = Annotated[Principal, Depends(current_user)]


async def current_admin(state: State, principal: User, ip: Address) -> Principal:
    """Admins: ``role=admin`` AND a client address inside ``PENPAY_ADMIN_ALLOWED_CIDRS``; either alone is 403."""
    if not principal.is_admin:
        raise ApiProblem(403, "admin_only", "this route is for administrators")
    if not contains(state.admin_networks, ip):
        raise ApiProblem(403, "admin_address_not_allowed", "administration is not allowed from this address")
    return principal


Admin = Annotated[Principal, Depends(current_admin)]


def sees_everything(state: ApiState, principal: Principal, ip: str) -> bool:
    """An admin reading any transaction must also come from an allowed address."""
    return principal.is_admin and contains(state.admin_networks, ip)
