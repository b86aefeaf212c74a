"""Idempotency keys on money-moving POSTs, with Stripe's semantics, durable in MySQL.

- ``Idempotency-Key`` is required on ``POST /deposit`` and ``POST /withdraw`` (422 ``idempotency_key_required``);
  keys are scoped per user (the same key from two users are two keys) and kept 24 hours.
- The first request *claims* the key in its own short transaction (so a concurrent duplicate sees it and gets 409
  ``idempotency_request_in_flight``). The response is then written under the key **in the same MySQL transaction**
  as the transaction row it created (see ``service_layer.deposits``), so a replay and the money can never disagree.
- The same key with the same body (same method, path and JSON value) replays the stored status and body bytes
  exactly, with ``Idempotent-Replayed: true``; with a different body it is 422 ``idempotency_key_reused``.
- A request rejected by a rule (4xx) stores its problem as the key's result; one that failed on our side (5xx:
  float or provider unavailable, a crash) releases the key so the client may retry with it. A claim left in flight
  longer than ``IN_FLIGHT_STALE`` (its request died before committing anything) is taken over by the next request.
- Expired keys (older than 24 h) are purged lazily: when met, and on a small share of new claims.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from penpay.adapters.db.intake import SqlIntakeUnitOfWork
from penpay.api.problems import PROBLEM_JSON, ApiProblem, domain_problem
from penpay.api.schemas import render_transaction
from penpay.service_layer.housekeeping import IDEMPOTENCY_RETENTION
from penpay_domain.errors import DomainError, InvalidInput
from penpay_domain.ids import IdempotencyKey, UserId
from penpay_domain.transaction import Transaction

HEADER = "Idempotency-Key"
RETENTION = IDEMPOTENCY_RETENTION
IN_FLIGHT_STALE = timedelta(seconds=60)
PURGE_ONE_IN = 200


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: bytes

    def response(self) -> Response:
        media = PROBLEM_JSON if self.status_code >= 400 else "application/json"
        return Response(
            content=self.body,
            status_code=self.status_code,
            media_type=media,
            headers={"Idempotent-Replayed": "true"},
        )


def require_key(user_id: str, header: str | None) -> IdempotencyKey:
    if header is None or not header.strip():
        raise ApiProblem(422, "idempotency_key_required", f"this request needs an {HEADER} header")
    try:
        return IdempotencyKey(UserId(user_id), header.strip())
    except InvalidInput as exc:
        raise ApiProblem(422, "invalid_idempotency_key", exc.message) from exc


def request_path(request: Request) -> str:
    """``request.url.path`` (what the request hash has always covered) without building the whole URL."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def request_hash(method: str, path: str, body: bytes) -> str:
    """What "the same request" means: method, path and the body's JSON value (key order and spacing ignored)."""
    try:
        canonical: Any = json.loads(body) if body else None
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        text = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{text}".encode()).hexdigest()


class IdempotencyGate:
    def __init__(self, uow_factory: Callable[[], SqlIntakeUnitOfWork]) -> None:
        self._uow = uow_factory

    async def claim(self, key: IdempotencyKey, digest: str) -> Replay | None:
        """None: the key is ours, go ahead. A ``Replay``: answer with it. Raises 409/422 problems."""
        async with self._uow() as uow:
            now = uow.now
            existing = await uow.idempotency.begin(key, digest, now)
            if existing is not None and existing.created_at < now - RETENTION:
                await uow.idempotency.purge_older_than(now - RETENTION)
                existing = await uow.idempotency.begin(key, digest, now)
            if existing is None:
                if secrets.randbelow(PURGE_ONE_IN) == 0:
                    await uow.idempotency.purge_older_than(now - RETENTION)
                await uow.commit()
                return None
            if existing.request_hash != digest:
                raise ApiProblem(
                    422,
                    "idempotency_key_reused",
                    f"this {HEADER} was used with a different request; use a new key for a new request",
                )
            if existing.status_code is None or existing.response_body is None:
                if existing.created_at < now - IN_FLIGHT_STALE:
                    await uow.idempotency.release(key)
                    if await uow.idempotency.begin(key, digest, now) is None:
                        await uow.commit()
                        return None
                raise ApiProblem(
                    409,
                    "idempotency_request_in_flight",
                    f"a request with this {HEADER} is still being processed; retry shortly",
                    headers={"Retry-After": "1"},
                )
            return Replay(int(existing.status_code), bytes(existing.response_body))

    async def settle_rejection(self, key: IdempotencyKey, status_code: int, body: bytes) -> None:
        """After a rejected request: keep a rule's 4xx as the key's answer; release the key after a 5xx."""
        async with self._uow() as uow:
            if status_code < 500:
                await uow.idempotency.finish(key, status_code=status_code, body=body, transaction_id=None)
            else:
                await uow.idempotency.release(key)
            await uow.commit()

    async def release(self, key: IdempotencyKey) -> None:
        async with self._uow() as uow:
            await uow.idempotency.release(key)
            await uow.commit()

    async def run(
        self, key: IdempotencyKey, request: Request, initiate: Callable[[], Awaitable[Transaction]]
    ) -> Response:
        """The whole Stripe-style exchange around a money-moving POST: claim the key (or replay its answer), run
        ``initiate`` (which stores its own 202 response with the transaction), keep a rule's 4xx as the key's answer,
        and release the key after anything else so the client may retry."""
        replay = await self.claim(key, request_hash(request.method, request_path(request), await request.body()))
        if replay is not None:
            return replay.response()
        try:
            txn = await initiate()
        except DomainError as exc:
            status, problem = domain_problem(exc)
            await self.settle_rejection(key, status, problem)
            return Response(content=problem, status_code=status, media_type=PROBLEM_JSON)
        except BaseException:
            await self.release(key)
            raise
        structlog.contextvars.bind_contextvars(transaction_id=txn.id)
        return Response(content=render_transaction(txn), status_code=202, media_type="application/json")
