"""Starting the real PenPay processes for end-to-end tests: sandbox, gateway, API and worker(s), each a separate OS
process run exactly as ``make run`` runs it (the console scripts), on free ports, against a throwaway database and
a private Redis key prefix. Nothing in-process, nothing faked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from honcho.environ import parse_procfile

from penpay.cli import mint_token
from penpay.settings import Settings
from tests.ports import free_ports
from tests.redis_keys import drop_keys

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def procfile(path: Path = ROOT / "Procfile") -> dict[str, tuple[str, ...]]:
    """The Procfile's processes, read as ``make run`` reads them (honcho): name -> its command, ``exec`` dropped."""
    commands: dict[str, tuple[str, ...]] = {}
    for name, command in parse_procfile(path.read_text(encoding="utf-8")).processes.items():
        argv = tuple(shlex.split(command))
        commands[name] = argv[1:] if argv[:1] == ("exec",) else argv
    return commands


# the worker process as `make run` runs it
WORKER = procfile()["worker"]
LOGS = Path(os.environ.get("PENPAY_E2E_LOGS", "/tmp/penpay-e2e"))


@dataclass
class Platform:
    env: dict[str, str]
    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['PENPAY_API_PORT']}"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.env['PENPAY_SANDBOX_HTTP_PORT']}"

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name).open("ab")
        proc = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.write(f"\n--- started pid={proc.pid}\n".encode())
        log.flush()
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return LOGS / f"{self.env['PENPAY_STREAM_PREFIX']}-{name}.log"

    async def wait_for_log(self, name: str, text: str, timeout_s: float = 20) -> None:
        """Wait until the process has logged ``text`` since it was (last) started."""
        proc = self.procs[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_path(name).read_text(errors="replace").split(f"pid={proc.pid}")[-1]:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} did not log {text!r} within {timeout_s}s")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)

    def token(self, user: str, role: str | None = None) -> str:
        return mint_token(self.settings, sub=user, role=role)

    def headers(self, user: str, *, key: str | None = None, role: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token(user, role)}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h


def _wait_http(url: str, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready at {url} within {timeout_s}s ({last}); logs in {LOGS}")


def _run(argv: list[str], env: Mapping[str, str]) -> None:
    subprocess.run([str(BIN / argv[0]), *argv[1:]], env=dict(env), check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def platform(database_url: str, redis_url: str, **overrides: str) -> Iterator[Platform]:
    """Migrate and fund a throwaway database, start sandbox, gateway, API and one worker (the Procfile's commands);
    stop them all after."""
    tag = uuid.uuid4().hex[:8]
    names = ("api", "grpc", "health", "daraja", "deriv", "smtp", "control", "worker_health")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PENPAY_")},
        "PENPAY_ENV": "sandbox",
        "PENPAY_LOG_LEVEL": "INFO",
        "PENPAY_DATABASE_URL": database_url,
        "PENPAY_REDIS_URL": redis_url,
        "PENPAY_STREAM_PREFIX": f"e2e-{tag}",
        "PENPAY_API_PORT": str(ports["api"]),
        "PENPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['api']}",
        "PENPAY_GATEWAY_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "PENPAY_GATEWAY_HEALTH_PORT": str(ports["health"]),
        "PENPAY_WORKER_HEALTH_PORT": str(ports["worker_health"]),
        "PENPAY_DERIV_WS_URL": f"ws://127.0.0.1:{ports['deriv']}/websockets/v3",
        "PENPAY_DARAJA_BASE_URL": f"http://127.0.0.1:{ports['daraja']}",
        "PENPAY_SANDBOX_DARAJA_PORT": str(ports["daraja"]),
        "PENPAY_SANDBOX_DERIV_PORT": str(ports["deriv"]),
        "PENPAY_SMTP_PORT": str(ports["smtp"]),
        "PENPAY_SANDBOX_HTTP_PORT": str(ports["control"]),
        "PENPAY_SANDBOX_CALLBACK_DELAY_MS": "100",
        # the sandbox's books in memory: a developer's .env (read from the working directory) may name a directory
        # that make run's sandbox keeps its books in, and these processes must neither read nor add to them
        "PENPAY_SANDBOX_STATE_DIR": "",
        "PENPAY_RECONCILE_AFTER_S": "2",
        "PENPAY_WORKER_CLAIM_IDLE_MS": "3000",
        "PENPAY_WORKER_BLOCK_MS": "500",
        "PENPAY_RATE_LIMIT_USER_PER_MIN": "10000",
        "PENPAY_RATE_LIMIT_IP_PER_MIN": "10000",
        **overrides,
    }
    _run(["penpay", "migrate"], env)
    _run(["penpay", "ledger", "fund", "deriv:agent", "1000000.00", "--ref", "e2e-agent"], env)
    _run(["penpay", "ledger", "fund", "mpesa:disbursements", "10000000", "--ref", "e2e-b2c"], env)
    settings = Settings(
        _env_file=None, **{k[len("PENPAY_") :].lower(): v for k, v in env.items() if k.startswith("PENPAY_")}
    )  # type: ignore[arg-type]
    p = Platform(env=env, settings=settings)
    try:
        p.start("sandbox", "penpay-sandbox")
        _wait_http(f"{p.control}/healthz", 30, "the sandbox")
        p.start("gateway", "penpay-gateway")
        _wait_http(f"http://127.0.0.1:{ports['health']}/readyz", 30, "the gateway")
        p.start("api", "penpay-api")
        _wait_http(f"{p.api}/readyz", 30, "the API")
        p.start("worker", *WORKER)
        yield p
    finally:
        p.stop_all()
        asyncio.run(drop_keys(redis_url, env["PENPAY_STREAM_PREFIX"]))


async def wait_for_status(
    client: httpx.AsyncClient, platform: Platform, user: str, txn_id: str, statuses: set[str], timeout_s: float = 40
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"{platform.api}/transactions/{txn_id}", headers=platform.headers(user))
        body = response.json()
        if body.get("status") in statuses:
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{txn_id} stayed {body.get('status')} (wanted {statuses}); logs in {LOGS}")
