"""Who is calling: JWT bearer tokens, the client's address behind trusted proxies, and the admin gate.

Tokens (pyjwt): the algorithm is pinned from ``PENPAY_JWT_ALGORITHM`` (HS* with ``PENPAY_JWT_SECRET``, RS*/ES*/PS*
with ``PENPAY_JWT_PUBLIC_KEY``); a token whose header names any other algorithm (``none``, or HS256 against an RSA
key) is refused before its signature is looked at. ``exp``, ``nbf``, ``iss``, ``aud`` and ``sub`` are required
(ISSUE 4: "exp, nbf, iss, aud required and checked"), checked with ``PENPAY_JWT_LEEWAY_S`` of leeway. ``sub`` is the
user id (1-64 printable characters); ``role=admin`` marks an admin. A token that passed is remembered (up to
``VERIFIED_CACHE_SIZE`` of them) until its ``exp`` (plus leeway), so a client's next requests skip the signature
and claim checks: the key and the rules are fixed for the process's life, and ``exp`` is checked on every use.

Client address: the TCP peer, unless the peer is one of ``PENPAY_TRUSTED_PROXIES``; then ``X-Forwarded-For`` is
walked from the right, skipping trusted proxies, and the first other address is the client. A client can therefore
prepend anything it likes to the header without effect.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

import jwt

from penpay.api.problems import ApiProblem
from penpay.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penpay"'}
INVALID_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penpay", error="invalid_token"'}
REQUIRED_CLAIMS = ["exp", "nbf", "iss", "aud", "sub"]
VERIFIED_CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def networks(items: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def contains(nets: tuple[Network, ...], address: str) -> bool:
    addr = _address(address)
    return addr is not None and any(addr in net for net in nets)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address (see the module docstring)."""
    if peer is None:
        return "0.0.0.0"  # noqa: S104 - an unknown peer: matches no allowlist
    if not forwarded_for or not contains(trusted, peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return peer  # a malformed hop: trust nothing beyond the proxy we know
        if not any(addr in net for net in trusted):
            return str(addr)
    return str(_address(hops[0])) if hops else peer


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        if self._algorithm.upper() == "NONE":
            raise ValueError("PENPAY_JWT_ALGORITHM cannot be 'none'")
        if self._algorithm.startswith("HS"):
            self._key: Any = settings.jwt_secret.get_secret_value()
        else:
            if settings.jwt_public_key is None or not settings.jwt_public_key.get_secret_value().strip():
                raise ValueError(f"PENPAY_JWT_ALGORITHM={self._algorithm} needs PENPAY_JWT_PUBLIC_KEY (PEM)")
            self._key = settings.jwt_public_key.get_secret_value()
        # token -> (its principal, the moment it stops being accepted): insertion order is eviction order
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]  # expired: the full check below says so
        principal, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self._algorithm:
                raise _invalid("the token's algorithm is not accepted")
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _invalid("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise _invalid("the token is invalid") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 64 or not all(33 <= ord(ch) <= 126 for ch in sub):
            raise _invalid("the token's subject is not a user id")
        role = claims.get("role", "user")
        # pyjwt refuses a token once ``exp <= now - leeway``; it has checked that ``exp`` is a number
        expires = float(claims["exp"]) + self._leeway
        return Principal(user_id=sub, role=role if isinstance(role, str) else "user"), expires


def _invalid(detail: str) -> ApiProblem:
    return ApiProblem(401, "invalid_token", detail, headers=INVALID_TOKEN_CHALLENGE)
