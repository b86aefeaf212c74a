"""How many connections the sandbox's listeners let wait to be accepted.

asyncio's ``create_server`` listens with a backlog of 100. The gateway opens a WebSocket to Deriv for every
withdrawal (the client's own session) and the worker an SMTP session for every notification, so a batch of
withdrawals opens dozens at once; beyond the backlog the kernel drops the SYNs, and each dropped client connects
again only after TCP's one-second retransmission: in a 400-withdrawal burst that left the cores idle for part of a
second at a time (docs/performance.md, round 15). The sandbox listens as uvicorn does (its default, 2048), the
kernel capping it at ``net.core.somaxconn``.
"""

from __future__ import annotations

LISTEN_BACKLOG = 2048
