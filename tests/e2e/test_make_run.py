"""``make run``, for real: its supervisor (``python -m penpay.devrun``, the repository's Procfile, honcho) starts
the real processes against the real MariaDB and Redis, each health endpoint answers, and one SIGINT (Ctrl-C) stops
every child, leaving no orphan behind. Every port is a free one and the database a throwaway, so this runs beside
anything else (another ``make run``, pytest-xdist workers).

Processes whose program cannot run yet (a console script whose module is not written) are left out, by name, so the
test covers every process that exists; the demo test needs the API and the worker and is skipped until both exist.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from penpay.adapters.db.engine import drop_database
from tests.ports import free_ports
from tests.redis_keys import drop_keys

pytestmark = pytest.mark.e2e

PROGRAMS = {
    "sandbox": "penpay-sandbox",
    "gateway": "penpay-gateway",
    "api": "penpay-api",
    "worker": "penpay-worker",
}
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def runnable(program: str) -> bool:
    """The console script is installed and the module it calls exists."""
    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    entry = scripts.get(program)
    if entry is None or not (Path(sys.executable).parent / program).exists():
        return False
    try:
        return importlib.util.find_spec(entry.module) is not None
    except ModuleNotFoundError:
        return False


AVAILABLE = [name for name, program in PROGRAMS.items() if runnable(program)]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None when it no longer exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found: dict[int, str] = {}
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                continue
            queue.append(child)
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"  # a zombie has exited; only its parent's bookkeeping remains


class Platform:
    """``make run``'s supervisor in a directory of its own, with its own ports, database and stream prefix."""

    def __init__(self, workdir: Path, server_urls: tuple[str, str]) -> None:
        api, grpc, health, daraja, deriv, smtp, control, worker_health = free_ports(8)
        suffix = uuid.uuid4().hex[:8]
        self.database_url = (
            make_url(server_urls[0]).set(database=f"penpay_e2e_run_{suffix}").render_as_string(hide_password=False)
        )
        self.workdir = workdir
        self.redis_url = server_urls[1]
        self.stream_prefix = f"penpay-e2e-run-{suffix}"
        self.urls = {
            "api": f"http://127.0.0.1:{api}/healthz",
            "gateway": f"http://127.0.0.1:{health}/readyz",
            "worker": f"http://127.0.0.1:{worker_health}/readyz",
            "sandbox": f"http://127.0.0.1:{control}/healthz",
        }
        self.env = {
            **os.environ,
            "PENPAY_ENV": "sandbox",
            "PENPAY_DATABASE_URL": self.database_url,
            "PENPAY_REDIS_URL": server_urls[1],
            "PENPAY_STREAM_PREFIX": self.stream_prefix,
            "PENPAY_API_HOST": "127.0.0.1",
            "PENPAY_API_PORT": str(api),
            "PENPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{api}",
            "PENPAY_GATEWAY_GRPC_ADDR": f"127.0.0.1:{grpc}",
            "PENPAY_GATEWAY_HEALTH_PORT": str(health),
            "PENPAY_WORKER_HEALTH_PORT": str(worker_health),
            "PENPAY_DARAJA_BASE_URL": f"http://127.0.0.1:{daraja}",
            "PENPAY_DERIV_WS_URL": f"ws://127.0.0.1:{deriv}/websockets/v3",
            "PENPAY_SMTP_HOST": "127.0.0.1",
            "PENPAY_SMTP_PORT": str(smtp),
            "PENPAY_SANDBOX_HTTP_PORT": str(control),
            "PENPAY_SANDBOX_DARAJA_PORT": str(daraja),
            "PENPAY_SANDBOX_DERIV_PORT": str(deriv),
            "PENPAY_SANDBOX_CALLBACK_DELAY_MS": "50",
        }
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.children: dict[int, str] = {}

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self, processes: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "penpay.devrun", "--only", ",".join(processes), "--ready-timeout", "30"],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a signal meant for pytest never reaches it; it gets only ours
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while "PenPay is up" not in self.output:
            assert self.proc.poll() is None, f"make run exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"not up within {START_TIMEOUT_S:.0f}s:\n{self.output}"
            time.sleep(0.1)
        self.children = descendants(self.proc.pid)

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the supervisor; its exit code once it has exited."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        """Whatever a failed test left running is killed; the database and the Redis keys are dropped."""
        if self.proc is not None and self.proc.poll() is None:
            self.children |= descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        asyncio.run(self._drop())

    async def _drop(self) -> None:
        await drop_database(self.database_url)
        await drop_keys(self.redis_url, self.stream_prefix)  # the gateway's records too


@pytest.fixture
def platform(tmp_path: Path, service_urls: tuple[str, str]) -> Iterator[Platform]:
    running = Platform(tmp_path, service_urls)
    try:
        yield running
    finally:
        running.cleanup()


def penpay(platform: Platform, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "penpay.cli", *args],
        cwd=platform.workdir,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestMakeRun:
    def test_every_process_starts_answers_its_health_check_and_ctrl_c_stops_every_child(
        self, platform: Platform
    ) -> None:
        platform.start(AVAILABLE)

        commands = " | ".join(platform.children.values())
        for name in AVAILABLE:
            assert PROGRAMS[name] in commands, f"{name} is not running under make run: {commands}"
        for name, url in platform.urls.items():
            if name in AVAILABLE:
                assert httpx.get(url, timeout=5).status_code == 200, f"{name}: {url}"
        assert (platform.workdir / ".env").exists(), "make run creates .env from .env.example when missing"
        assert "sandbox ledger: deriv:agent funded with 1000000.00 USD (ref sandbox-agent-opening)" in platform.output
        for name in AVAILABLE:
            assert f"run |   {name:<8} " in platform.output, f"make run does not say where {name} listens"

        assert platform.interrupt() == 0, platform.output

        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (left := {pid: cmd for pid, cmd in platform.children.items() if alive(pid)}) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not left, f"still running after Ctrl-C: {left}\n{platform.output}"
        assert "every process stopped" in platform.output

    def test_a_second_run_finds_the_sandbox_ledger_already_funded(self, platform: Platform) -> None:
        platform.start(["sandbox"])
        assert platform.interrupt() == 0
        platform.lines.clear()
        platform.start(["sandbox"])
        assert "deriv:agent already funded with 1000000.00 USD (ref sandbox-agent-opening)" in platform.output
        assert "mpesa:disbursements already funded with 10000000 KES (ref sandbox-b2c-opening)" in platform.output
        assert platform.interrupt() == 0

    def test_unreachable_mysql_and_redis_are_named_with_where_and_how_and_nothing_starts(
        self, platform: Platform
    ) -> None:
        db_port, redis_port = free_ports(2)  # nothing listens there
        platform.env["PENPAY_DATABASE_URL"] = f"mysql+asyncmy://root:s3cret-pw@127.0.0.1:{db_port}/penpay"
        platform.env["PENPAY_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        result = subprocess.run(
            [sys.executable, "-m", "penpay.devrun"],
            cwd=platform.workdir,
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert f"cannot reach MySQL/MariaDB at mysql+asyncmy://root:***@127.0.0.1:{db_port}/penpay" in result.stderr
        assert f"cannot reach Redis at redis://127.0.0.1:{redis_port}/0" in result.stderr
        assert "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd" in result.stderr
        assert f"redis-server --daemonize yes --bind 127.0.0.1 -::1 --port {redis_port}" in result.stderr
        assert "s3cret-pw" not in result.stdout + result.stderr
        assert "honcho" not in result.stdout, "nothing may start when a server is missing"
        platform.env["PENPAY_DATABASE_URL"] = platform.database_url  # for the fixture's cleanup


class TestDemo:
    def test_without_a_running_platform_it_says_to_run_make_run_and_exits_1(self, platform: Platform) -> None:
        result = penpay(platform, "demo", timeout=30)
        assert result.returncode == 1
        assert "the platform is not running" in result.stderr
        assert "make run" in result.stderr

    @pytest.mark.skipif(
        not {"api", "worker"} <= set(AVAILABLE),
        reason=f"the demo needs penpay-api and penpay-worker; runnable now: {', '.join(AVAILABLE)}",
    )
    def test_one_deposit_and_one_withdrawal_complete_through_the_running_platform(self, platform: Platform) -> None:
        platform.start(AVAILABLE)
        result = penpay(platform, "demo", "--timeout", "45")
        assert result.returncode == 0, result.stdout + result.stderr + platform.output
        assert "deposit COMPLETED, withdrawal COMPLETED" in result.stdout
        metrics = httpx.get(platform.urls["worker"].replace("/readyz", "/metrics"), timeout=5).text
        handled = [line for line in metrics.splitlines() if line.startswith("penpay_worker_messages_handled_total{")]
        assert any(not line.endswith(" 0.0") for line in handled), metrics  # the worker's own count of its work
        assert "ledger check (GET /admin/ledger/check): ok" in result.stdout
        assert "Deriv agent balance against deriv:agent (GET /admin/ledger/deriv-agent): explained" in result.stdout
        assert platform.interrupt() == 0
