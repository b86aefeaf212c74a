"""PenPay's settings: one pydantic-settings class, read from ``PENPAY_*`` environment variables, then ``.env``.

Each process's composition root builds one ``Settings`` and passes it down; nothing deeper imports it as a global.
The names are a stable contract (ARCHITECTURE §11); ``.env.example`` lists every one with a sandbox default.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105 - sandbox default, refused in production
DEV_CALLBACK_SECRET = "dev-only-callback-secret-change-me-0123456789"  # noqa: S105
DEV_TOKEN_KEY = "ZGV2LW9ubHktdG9rZW4ta2V5LWNoYW5nZS1tZS0wMTI="  # noqa: S105 - Fernet-style key, sandbox only
SANDBOX_DERIV_AGENT_TOKEN = "sandbox-agent-token-CR900000"  # noqa: S105
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200,196.201.214.206,196.201.213.114,196.201.214.207,196.201.214.208,196.201.213.44,"
    "196.201.212.127,196.201.212.138,196.201.212.129,196.201.212.136,196.201.212.74,196.201.212.69"
)
_SANDBOX_HOSTS = ("127.0.0.1", "localhost", "::1", "sandbox")


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PENPAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    env: Environment = Environment.SANDBOX
    log_level: str = "INFO"

    database_url: str = "mysql+asyncmy://root:@127.0.0.1:3306/penpay"
    database_pool_size: int = 20
    database_statement_cache: int = Field(default=64, ge=0)
    dedupe_retention_days: int = Field(default=7, ge=1)
    outbox_retention_days: int = Field(default=7, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_pool_size: int = Field(default=128, ge=1)
    stream_prefix: str = "penpay"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"

    jwt_algorithm: str = "HS256"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_public_key: SecretStr | None = None
    jwt_private_key: SecretStr | None = None
    jwt_issuer: str = "penpay"
    jwt_audience: str = "penpay-api"
    jwt_leeway_s: int = 5

    admin_allowed_cidrs: Annotated[list[str], NoDecode] = Field(default=["127.0.0.0/8", "::1/128"])
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default=[])
    callback_allowed_ips: Annotated[list[str], NoDecode] = Field(default=["127.0.0.1", "::1"])
    callback_public_prefix: str = "/hooks"
    callback_secret: SecretStr = SecretStr(DEV_CALLBACK_SECRET)

    gateway_grpc_addr: str = "127.0.0.1:50051"
    gateway_health_port: int = 8081
    # where the gateway's and the worker's /healthz /readyz /metrics listen (0.0.0.0: for a scraper elsewhere)
    health_host: str = "127.0.0.1"
    gateway_lease_ttl_s: int = 10
    deriv_ws_url: str = "ws://127.0.0.1:8091/websockets/v3"
    deriv_app_id: str = "1089"
    deriv_agent_token: SecretStr = SecretStr(SANDBOX_DERIV_AGENT_TOKEN)
    deriv_client_sessions: int = Field(default=64, ge=1)  # users' sockets open at once (.env.example)
    token_encryption_key: SecretStr = SecretStr(DEV_TOKEN_KEY)

    daraja_base_url: str = "http://127.0.0.1:8090"
    daraja_consumer_key: str = "sandbox-consumer-key"
    daraja_consumer_secret: SecretStr = SecretStr("sandbox-consumer-secret")
    daraja_shortcode: str = "174379"
    daraja_passkey: SecretStr = SecretStr("bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919")
    daraja_b2c_shortcode: str = "600997"
    daraja_initiator_name: str = "testapi"
    daraja_initiator_password: SecretStr = SecretStr("Safaricom999!*!")
    daraja_cert_path: str = ""
    daraja_timeout_s: float = 30.0

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    mail_from: str = "PenPay <no-reply@penpay.local>"

    rate_limit_user_per_min: int = 120
    rate_limit_ip_per_min: int = 600
    rate_limit_callback_per_min: int = 6000

    fx_provider: str = "static"
    fx_static_kes_per_usd: Decimal = Decimal("129.50")
    fx_spread_bps: int = 150
    fx_quote_ttl_s: int = 60

    deposit_min_kes: int = 10
    deposit_max_kes: int = 250_000
    daily_limit_kes: int = 500_000
    withdraw_min_kes: int = 10
    withdraw_max_kes: int = 250_000

    intake_max_batch: int = Field(
        default=64, ge=1
    )  # deposits (or callbacks) one database transaction of the API takes at most
    intake_max_in_flight: int = Field(default=2, ge=1)  # such transactions at once per API process
    # a deposit or withdrawal still waiting this long after it arrived, before its batch, is answered 503 (0: never)
    intake_queue_deadline_ms: int = Field(default=2_000, ge=0)

    reconcile_after_s: int = 30
    ops_email: str = ""
    worker_claim_idle_ms: int = 60_000
    worker_max_deliveries: int = 8
    worker_block_ms: int = 1_000
    worker_concurrency: int = Field(default=256, ge=1)  # per stream, per worker process (.env.example)
    worker_linger_ms: int = Field(default=40, ge=0, le=1_000)  # a small batch waits this long for more
    worker_health_port: int = Field(default=8082, ge=0, le=65_535)  # /healthz /readyz /metrics; 0: none

    sandbox_http_port: int = 8092
    sandbox_daraja_port: int = 8090
    sandbox_deriv_port: int = 8091
    sandbox_callback_delay_ms: int = 300
    sandbox_state_dir: str = ""  # where the sandbox keeps its Deriv books across restarts; empty: in memory only

    @field_validator("admin_allowed_cidrs", "trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        return _split(value)

    @field_validator("callback_allowed_ips", mode="before")
    @classmethod
    def _split_ips(cls, value: object) -> object:
        return _split(value)

    @field_validator("admin_allowed_cidrs", "trusted_proxies", "callback_allowed_ips")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("fx_static_kes_per_usd")
    @classmethod
    def _positive_rate(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("the FX rate must be positive")
        return value

    @model_validator(mode="after")
    def _production_is_not_sandbox(self) -> Self:
        if self.env is not Environment.PRODUCTION:
            return self
        problems = []
        for name in ("daraja_base_url", "deriv_ws_url", "public_base_url"):
            url = getattr(self, name)
            if any(host in url for host in _SANDBOX_HOSTS):
                problems.append(f"PENPAY_{name.upper()} points at a sandbox/local host")
        defaults = {
            "jwt_secret": DEV_JWT_SECRET,
            "callback_secret": DEV_CALLBACK_SECRET,
            "token_encryption_key": DEV_TOKEN_KEY,
            "deriv_agent_token": SANDBOX_DERIV_AGENT_TOKEN,
        }
        for name, default in defaults.items():
            if getattr(self, name).get_secret_value() == default:
                problems.append(f"PENPAY_{name.upper()} still has its development default")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION
