"""Who may call: JWT checks (the attack list), the admin gate (role AND address), trusted proxies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.api.conftest import Api, MakeApi, new_user

pytestmark = pytest.mark.integration


def _claims(api: Api, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": new_user(),
        "iss": api.settings.jwt_issuer,
        "aud": api.settings.jwt_audience,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    body = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(body).encode())}."


def _hs256_with_key(claims: dict[str, Any], key: bytes) -> str:
    """HS256 signed with an arbitrary byte string (pyjwt refuses PEM keys as HMAC secrets, an attacker does not)."""
    body = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(body).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _me(api: Api, token: str) -> Any:
    return await api.client.get("/transactions", headers={"Authorization": f"Bearer {token}"})


def _secret(api: Api) -> str:
    return api.settings.jwt_secret.get_secret_value()


class TestJwt:
    async def test_a_valid_token_is_accepted(self, api: Api) -> None:
        assert (await _me(api, jwt.encode(_claims(api), _secret(api), algorithm="HS256"))).status_code == 200

    @pytest.mark.parametrize(
        "attack",
        [
            "alg_none",
            "wrong_key",
            "expired",
            "not_yet_valid",
            "wrong_audience",
            "wrong_issuer",
            "missing_sub",
            "missing_exp",
            "missing_nbf",
            "missing_aud",
            "garbage",
            "hs512_instead_of_hs256",
        ],
    )
    @pytest.mark.filterwarnings("ignore:The HMAC key")
    async def test_attacks_are_401_problems_with_a_bearer_challenge(self, api: Api, attack: str) -> None:
        secret, now = _secret(api), datetime.now(UTC)
        tokens: dict[str, Callable[[], str]] = {
            "alg_none": lambda: _unsigned(_claims(api)),
            "wrong_key": lambda: jwt.encode(_claims(api), "not-the-key-" + secrets.token_hex(16), algorithm="HS256"),
            "expired": lambda: jwt.encode(_claims(api, exp=now - timedelta(minutes=1)), secret, algorithm="HS256"),
            "not_yet_valid": lambda: jwt.encode(
                _claims(api, nbf=now + timedelta(minutes=5)), secret, algorithm="HS256"
            ),
            "wrong_audience": lambda: jwt.encode(_claims(api, aud="someone-else"), secret, algorithm="HS256"),
            "wrong_issuer": lambda: jwt.encode(_claims(api, iss="evil"), secret, algorithm="HS256"),
            "missing_sub": lambda: jwt.encode(_claims(api, sub=None), secret, algorithm="HS256"),
            "missing_exp": lambda: jwt.encode(_claims(api, exp=None), secret, algorithm="HS256"),
            "missing_nbf": lambda: jwt.encode(_claims(api, nbf=None), secret, algorithm="HS256"),
            "missing_aud": lambda: jwt.encode(_claims(api, aud=None), secret, algorithm="HS256"),
            "garbage": lambda: "not.a.jwt",
            "hs512_instead_of_hs256": lambda: jwt.encode(_claims(api), secret, algorithm="HS512"),
        }
        response = await _me(api, tokens[attack]())

        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_remembered_token_is_refused_once_it_expires(self, make_api: MakeApi) -> None:
        api = await make_api(jwt_leeway_s=0)
        exp = int(time.time()) + 2
        token = jwt.encode(_claims(api, exp=exp), _secret(api), algorithm="HS256")
        assert [(await _me(api, token)).status_code for _ in range(2)] == [200, 200]  # the second from memory

        await asyncio.sleep(max(0.0, exp - time.time()) + 0.1)
        response = await _me(api, token)

        assert response.status_code == 401
        assert response.json()["detail"] == "the token has expired"

    async def test_a_token_within_the_leeway_is_accepted(self, api: Api) -> None:
        token = jwt.encode(_claims(api, exp=datetime.now(UTC) - timedelta(seconds=2)), _secret(api), algorithm="HS256")
        assert (await _me(api, token)).status_code == 200  # PENPAY_JWT_LEEWAY_S = 5

    async def test_hs256_signed_with_the_rsa_public_key_is_refused_when_rs256_is_pinned(
        self, make_api: MakeApi
    ) -> None:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        from pydantic import SecretStr  # noqa: PLC0415

        api = await make_api(jwt_algorithm="RS256", jwt_public_key=SecretStr(public_pem.decode()))
        genuine = jwt.encode(_claims(api), private_pem, algorithm="RS256")
        confused = _hs256_with_key(_claims(api), public_pem)

        assert (await _me(api, genuine)).status_code == 200
        response = await _me(api, confused)
        assert response.status_code == 401 and response.json()["code"] == "invalid_token"
        hs_with_dev_secret = jwt.encode(_claims(api), _secret(api), algorithm="HS256")
        assert (await _me(api, hs_with_dev_secret)).status_code == 401


class TestAdminGate:
    async def test_an_admin_from_an_allowed_address_gets_in(self, api: Api) -> None:
        response = await api.client.get("/admin/ledger/check", headers=api.auth(new_user(), role="admin"))
        assert response.status_code == 200 and "ok" in response.json()

    async def test_the_admin_role_from_another_address_is_403(self, make_api: MakeApi) -> None:
        api = await make_api(client_ip="203.0.113.7")
        response = await api.client.get("/admin/ledger/check", headers=api.auth(new_user(), role="admin"))
        assert response.status_code == 403 and response.json()["code"] == "admin_address_not_allowed"

    async def test_an_allowed_address_without_the_admin_role_is_403(self, api: Api) -> None:
        response = await api.client.get("/admin/ledger/check", headers=api.auth(new_user()))
        assert response.status_code == 403 and response.json()["code"] == "admin_only"

    async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(self, make_api: MakeApi) -> None:
        api = await make_api(client_ip="203.0.113.7")  # claims to be localhost through a header
        headers = api.auth(new_user(), role="admin", **{"X-Forwarded-For": "127.0.0.1"})
        assert (await api.client.get("/admin/ledger/check", headers=headers)).status_code == 403

    async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(self, make_api: MakeApi) -> None:
        api = await make_api(
            client_ip="10.0.0.5", trusted_proxies=["10.0.0.0/24"], admin_allowed_cidrs=["192.0.2.0/24"]
        )
        inside = api.auth(new_user(), role="admin", **{"X-Forwarded-For": "198.51.100.1, 192.0.2.10"})
        spoofed = api.auth(new_user(), role="admin", **{"X-Forwarded-For": "192.0.2.10, 198.51.100.1"})
        assert (await api.client.get("/admin/ledger/check", headers=inside)).status_code == 200
        assert (await api.client.get("/admin/ledger/check", headers=spoofed)).status_code == 403
