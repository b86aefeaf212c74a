"""The sandbox's listeners take a burst of connections at once (a batch of withdrawals: a Deriv session and an SMTP
session each) with no SYN dropped past asyncio's default backlog of 100: each dropped client waited TCP's
one-second retransmission. Checked with the kernel's own count of listen-queue overflows (Linux), not a clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from penpay.sandbox.deriv import DerivSimulator
from penpay.sandbox.smtp import MailSink

BURST = 300
NETSTAT = Path("/proc/net/netstat")

pytestmark = [
    pytest.mark.contract,
    pytest.mark.skipif(not NETSTAT.exists(), reason="the kernel's counters are Linux's"),
]


def _listen_overflows() -> int:
    """TcpExt ListenOverflows: connections the kernel dropped because a listener's accept queue was full."""
    lines = NETSTAT.read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise LookupError("no TcpExt line")


async def _burst(port: int) -> int:
    """Connect ``BURST`` clients at once; how many the kernel dropped meanwhile."""

    async def one() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    before = _listen_overflows()
    await asyncio.gather(*(one() for _ in range(BURST)))
    return _listen_overflows() - before


async def test_the_deriv_simulator_accepts_a_burst_of_sockets_without_dropping_one() -> None:
    sim = DerivSimulator(agent_token="sandbox-agent-token-CR900000")
    await sim.start("127.0.0.1", 0)
    try:
        assert await _burst(sim.port) == 0
    finally:
        await sim.stop()


async def test_the_smtp_sink_accepts_a_burst_of_sessions_without_dropping_one() -> None:
    mail = MailSink()
    await mail.start("127.0.0.1", 0)
    try:
        assert await _burst(mail.port) == 0
    finally:
        await mail.stop()
