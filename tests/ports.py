"""Free TCP ports for the processes and servers the tests start."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen, so that no port is handed out
    twice (asked one at a time, the kernel may give a port just released to the next ask, and a process that
    listens on several of them, as the sandbox does on four, then fails with "address already in use")."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def free_port() -> int:
    return free_ports(1)[0]
