"""The users' short-lived Deriv sockets, at most ``limit`` open at once.

Calls that Deriv runs on the client's side (``paymentagent_withdraw``, ``verify_email``, and ``authorize`` itself when
an account is linked) need a socket authorised with that user's token: one socket per call, opened, authorised, used
and closed (``connection.client_session``). A batch of withdrawals used to open as many at once as it held (hundreds
on payday), which real Deriv may meet with its connection limits and which a burst on one machine paid for in
connects. :class:`ClientSessions` bounds them: a call waits for one of ``limit`` slots, at most ``wait_s``; a call
that gets none sent nothing to Deriv, so it ends in ``NotSentError`` (the executor releases its reference and the
caller hears "unavailable", safe to retry with the same reference).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from penpay.gateway.connection import DerivSocket, client_session
from penpay.gateway.wire import Json, NotSentError
from penpay.logging import get_logger

log = get_logger(__name__)


class ClientSessions:
    """Opens user-token sockets to ``url`` (the agent connection's, app id included), ``limit`` at most; each call on
    them has ``timeout_s``."""

    def __init__(self, url: str, *, limit: int, wait_s: float, timeout_s: float) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._url = url
        self._slots = asyncio.Semaphore(limit)
        self._wait_s = wait_s
        self._timeout_s = timeout_s
        self.limit = limit
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def open(self, token: str, *, loginid: str | None = None) -> AsyncIterator[tuple[DerivSocket, Json]]:
        """A socket authorised with ``token`` (and checked to be ``loginid``'s), and the authorised account."""
        await self._acquire()
        try:
            async with client_session(self._url, token, timeout_s=self._timeout_s, loginid=loginid) as opened:
                yield opened
        finally:
            self._slots.release()

    @property
    def timeout_s(self) -> float:
        """Each call's own deadline on these sockets."""
        return self._timeout_s

    async def _acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: taken at once
            return
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError as exc:
            log.warning("deriv.client_sessions_full", limit=self.limit, waiting=self._waiting, wait_s=self._wait_s)
            raise NotSentError(
                f"all {self.limit} Deriv client sessions stayed busy for {self._wait_s:g} s; nothing was sent"
            ) from exc
        finally:
            self._waiting -= 1
