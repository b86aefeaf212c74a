"""The Redis client every PenPay process uses: one connection pool of a known size that waits for a free connection.

redis-py's own pool raises ``MaxConnectionsError`` the moment a command finds every connection busy (from 8.x its
default size is 100, before that it was effectively unbounded). Under a burst that is a failed request or a money
call answered "outcome unknown" for want of a socket (the gateway's withdrawals in one ``make bench`` run). Here a
command waits for a connection instead, for at most ``timeout_s``, and the pool's size is a setting
(``PENPAY_REDIS_POOL_SIZE``): a process holds at most that many connections to Redis.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis


def connect(url: str, *, pool_size: int, timeout_s: float, socket_timeout_s: float) -> Redis:
    """A client for ``url`` over a :class:`BlockingConnectionPool` of ``pool_size`` connections; a command waits up
    to ``timeout_s`` for a free one (then ``ConnectionError``)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=min(5.0, socket_timeout_s),
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections
