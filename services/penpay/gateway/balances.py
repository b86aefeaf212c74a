"""Balance tracker: the agent's ``balance`` subscription, published to Redis and served to GetBalance.

Deriv streams a message whenever the agent balance changes; each one updates the last known value and is appended
to the ``{stream_prefix}:deriv:balance`` Redis Stream as a versioned ``deriv.balance_changed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from penpay.gateway.connection import DerivCall, DerivConnection
from penpay.gateway.wire import Json, cents_from_wire
from penpay.logging import get_logger

log = get_logger(__name__)

EVENT_TYPE = "deriv.balance_changed"
EVENT_VERSION = "1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    loginid: str
    currency: str
    balance_cents: int
    as_of_unix_ms: int


def _event(balance: Balance) -> dict[str, str]:
    return {
        "type": EVENT_TYPE,
        "version": EVENT_VERSION,
        "loginid": balance.loginid,
        "currency": balance.currency,
        "balance_cents": str(balance.balance_cents),
        "occurred_at": datetime.fromtimestamp(balance.as_of_unix_ms / 1000, UTC).isoformat(),
    }


class BalanceTracker:
    def __init__(self, redis: Redis, *, stream_key: str, maxlen: int = 100_000) -> None:
        self._redis = redis
        self.stream_key = stream_key
        self._maxlen = maxlen
        self.last: Balance | None = None
        self._events: asyncio.Queue[Balance] = asyncio.Queue()

    async def subscribe(self, call: DerivCall) -> None:
        """``on_authorized`` hook: (re-)subscribe after every (re)connect."""
        answer = await call({"balance": 1, "subscribe": 1})
        self._update(answer["balance"])

    def on_subscription(self, message: Json) -> None:
        if message.get("msg_type") == "balance" and isinstance(message.get("balance"), dict):
            self._update(message["balance"])

    async def get(self, connection: DerivConnection) -> Balance:
        if self.last is None:
            answer = await connection.call({"balance": 1})
            self._update(answer["balance"])
        assert self.last is not None
        return self.last

    async def run(self) -> None:
        """Publish balance changes to the Redis Stream until cancelled: every change, in order, those that queued
        up meanwhile (a batch of transfers' worth) in one round trip."""
        while True:
            changes = [await self._events.get()]
            while not self._events.empty():
                changes.append(self._events.get_nowait())
            try:
                pipe = self._redis.pipeline(transaction=False)
                for balance in changes:
                    pipe.xadd(self.stream_key, _event(balance), maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
            except RedisError as exc:
                log.warning("deriv.balance_publish_failed", error=str(exc), changes=len(changes))
            finally:
                for _ in changes:
                    self._events.task_done()

    async def drain(self, timeout_s: float = 1.0) -> None:
        """Wait until queued events are published (tests and shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._events.join(), timeout_s)

    def _update(self, data: Json) -> None:
        balance = Balance(
            loginid=str(data["loginid"]),
            currency=str(data["currency"]),
            balance_cents=cents_from_wire(data["balance"]),
            as_of_unix_ms=int(time.time() * 1000),
        )
        changed = self.last is None or self.last.balance_cents != balance.balance_cents
        self.last = balance
        if changed:
            self._events.put_nowait(balance)
