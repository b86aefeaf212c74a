"""``make run``: PenPay's processes on this machine, against the MySQL and Redis named in ``.env`` (ARCHITECTURE §10).

    python -m penpay.devrun [run] [--only sandbox,gateway] [--scale worker=2]   preflight, then the Procfile
    python -m penpay.devrun check                                             exit 0 when MySQL and Redis answer
    python -m penpay.devrun probe URL                                         exit 0 when URL answers 2xx

``run`` creates ``.env`` from ``.env.example`` when it is missing, checks that MySQL and Redis answer (naming the one
that does not, where it looked and how to start one; exit 1), migrates, funds the sandbox ledger once (idempotent
references), prints where every process listens, then supervises the Procfile's processes with honcho: each line of
their output is prefixed with the process's name, and SIGINT/SIGTERM stop them all (honcho sends SIGTERM to each
process group and waits for it). ``check`` and ``probe`` are the container health checks of ``deploy/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
import sqlalchemy as sa
from honcho.environ import parse_procfile
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from penpay.settings import Environment, Settings

ROOT = Path(__file__).resolve().parents[2]
CONNECT_TIMEOUT_S = 5.0
STEP_TIMEOUT_S = 180.0
# The sandbox's Deriv agent (CR900000) starts with 1,000,000.00 USD; B2C payouts need shillings in the ledger too.
SANDBOX_FUNDING = (
    ("deriv:agent", "1000000.00", "sandbox-agent-opening"),
    ("mpesa:disbursements", "10000000", "sandbox-b2c-opening"),
)
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - listen-anywhere addresses, probed on loopback


def say(line: str) -> None:
    sys.stdout.write(f"run | {line}\n")
    sys.stdout.flush()


def fail(line: str) -> None:
    sys.stderr.write(f"make run: {line}\n")
    sys.stderr.flush()


def redact(url: str) -> str:
    """A service URL without its password (``***``)."""
    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------------------------ where things are
@dataclass(frozen=True, slots=True)
class Endpoint:
    process: str
    listens: str
    ready_url: str | None  # None: no port of its own (a worker with PENPAY_WORKER_HEALTH_PORT=0)


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in _WILDCARD_HOSTS else host


def _http(host: str, port: int) -> str:
    host = _probe_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def endpoints(settings: Settings) -> dict[str, Endpoint]:
    api = _http(settings.api_host, settings.api_port)
    sandbox_host = urlsplit(settings.daraja_base_url).hostname or "127.0.0.1"
    control = _http(sandbox_host, settings.sandbox_http_port)
    gateway_health = _http(settings.health_host, settings.gateway_health_port)
    return {
        "api": Endpoint("api", f"{api}  (OpenAPI {api}/docs, health /healthz /readyz)", f"{api}/readyz"),
        "worker": _worker_endpoint(settings),
        "gateway": Endpoint(
            "gateway",
            f"gRPC {settings.gateway_grpc_addr}, health {gateway_health}/healthz /readyz /metrics",
            f"{gateway_health}/readyz",
        ),
        "sandbox": Endpoint(
            "sandbox",
            f"Daraja {settings.daraja_base_url}, Deriv {settings.deriv_ws_url}, "
            f"SMTP {settings.smtp_host}:{settings.smtp_port}, control {control} (/mail, /deriv/..., /docs)",
            f"{control}/healthz",
        ),
    }


def _worker_endpoint(settings: Settings) -> Endpoint:
    streams = f"Redis streams '{settings.stream_prefix}:*' on {redact(settings.redis_url)}"
    if not settings.worker_health_port:
        return Endpoint("worker", f"{streams} (no health port)", None)
    health = _http(settings.health_host, settings.worker_health_port)
    return Endpoint("worker", f"{streams}, health {health}/healthz /readyz /metrics", f"{health}/readyz")


def sandbox_port_mismatches(settings: Settings) -> list[str]:
    """The sandbox listens on PENPAY_SANDBOX_*_PORT while clients dial the URLs: say when the two disagree."""
    problems = []
    pairs = (
        (
            "PENPAY_DARAJA_BASE_URL",
            settings.daraja_base_url,
            "PENPAY_SANDBOX_DARAJA_PORT",
            settings.sandbox_daraja_port,
        ),
        ("PENPAY_DERIV_WS_URL", settings.deriv_ws_url, "PENPAY_SANDBOX_DERIV_PORT", settings.sandbox_deriv_port),
    )
    for url_name, url, port_name, port in pairs:
        if urlsplit(url).port != port:
            problems.append(f"{url_name}={url} does not use {port_name}={port}: the clients will miss the sandbox")
    return problems


# ------------------------------------------------------------------------------------------------ MySQL and Redis
def _origin(variable: str, env_file: Path) -> str:
    if variable in os.environ:
        return "the environment"
    if env_file.exists():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            if line.split("=", 1)[0].strip() == variable:
                return str(env_file)
    return "the default"


def _mysql_help(url: str) -> list[str]:
    port = make_url(url).port or 3306
    return [
        "start one on this machine (as .ci/run does):",
        "    sudo mkdir -p /run/mysqld && sudo chown mysql:mysql /run/mysqld",
        "    sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
        "or with Docker:",
        f"    docker run -d --name penpay-mysql -p {port}:3306 -e MYSQL_ALLOW_EMPTY_PASSWORD=yes mysql:8.0",
        "or point PENPAY_DATABASE_URL (in .env) at a running MySQL 8 / MariaDB 10.11.",
    ]


def _redis_help(url: str) -> list[str]:
    port = urlsplit(url).port or 6379
    return [
        "start one on this machine (as .ci/run does):",
        f'    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port {port} --save "" --appendonly no',
        "or with Docker:",
        f"    docker run -d --name penpay-redis -p {port}:6379 redis:7",
        "or point PENPAY_REDIS_URL (in .env) at a running Redis 7.",
    ]


async def mysql_problem(url: str) -> str | None:
    """None when the MySQL server in ``url`` answers (the database itself may not exist yet), else why not."""
    engine = create_async_engine(
        make_url(url).set(database=""), connect_args={"connect_timeout": int(CONNECT_TIMEOUT_S)}
    )
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2), engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return None
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S * 2:.0f}s"
    except Exception as exc:  # any failure to connect is the answer we report
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        await engine.dispose()


async def redis_problem(url: str) -> str | None:
    client = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2):
            await client.ping()
        return None
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S * 2:.0f}s"
    except Exception as exc:
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()


async def unreachable(settings: Settings, env_file: Path) -> list[str]:
    """One paragraph per server that does not answer: which, where we looked (no password), how to start one."""
    db, rd = await asyncio.gather(mysql_problem(settings.database_url), redis_problem(settings.redis_url))
    paragraphs = []
    if db is not None:
        origin = _origin("PENPAY_DATABASE_URL", env_file)
        paragraphs.append(
            "\n  ".join(
                [
                    f"cannot reach MySQL/MariaDB at {redact(settings.database_url)} "
                    f"(PENPAY_DATABASE_URL, from {origin}): {db}",
                    *_mysql_help(settings.database_url),
                ]
            )
        )
    if rd is not None:
        origin = _origin("PENPAY_REDIS_URL", env_file)
        paragraphs.append(
            "\n  ".join(
                [
                    f"cannot reach Redis at {redact(settings.redis_url)} (PENPAY_REDIS_URL, from {origin}): {rd}",
                    *_redis_help(settings.redis_url),
                ]
            )
        )
    return paragraphs


# ------------------------------------------------------------------------------------------------ preparing
async def _penpay(*args: str) -> tuple[int, str, str]:
    """Run the ``penpay`` CLI (same interpreter, same environment and ``.env``) with a deadline."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "penpay.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 1, "", f"penpay {' '.join(args)} did not finish within {STEP_TIMEOUT_S:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def prepare(settings: Settings) -> bool:
    """Migrate, then (sandbox only) fund the ledger's agent and B2C accounts once. False when a step failed."""
    code, _, err = await _penpay("migrate")
    if code != 0:
        fail(f"penpay migrate failed (exit {code}):\n{err.strip()}")
        return False
    say(f"database {make_url(settings.database_url).database} migrated to head")
    if settings.env is not Environment.SANDBOX:
        return True
    for account, amount, ref in SANDBOX_FUNDING:
        code, out, err = await _penpay("ledger", "fund", account, amount, "--ref", ref)
        if code != 0:
            fail(f"penpay ledger fund {account} failed (exit {code}):\n{err.strip()}")
            return False
        result = json.loads(out)
        done = "funded" if result.get("posted") else "already funded"
        say(f"sandbox ledger: {account} {done} with {result['amount']} {result['currency']} (ref {ref})")
    return True


def ensure_env_file(env_file: Path, example: Path) -> None:
    if env_file.exists():
        return
    shutil.copyfile(example, env_file)
    say(f"created {env_file.name} from {example} (edit it to point PenPay at other servers)")


# ------------------------------------------------------------------------------------------------ supervising
def _executable(command: str) -> str:
    words = command.split()
    if words and words[0] == "exec":
        words = words[1:]
    return words[0] if words else ""


def missing_programs(procfile: dict[str, str], selected: Sequence[str], path: str) -> list[str]:
    """The selected processes whose program is not on ``path`` (e.g. a console script not installed yet)."""
    return [name for name in selected if shutil.which(_executable(procfile[name]), path=path) is None]


async def announce_ready(client: httpx.AsyncClient, checks: dict[str, str], timeout_s: float) -> None:
    """Print each process's readiness as it comes; warn about the ones still silent after ``timeout_s``."""
    pending = dict(checks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for name, url in list(pending.items()):
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                continue
            if response.is_success:
                say(f"ready: {name} ({url})")
                del pending[name]
        if pending and loop.time() > deadline:
            say(f"still not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))} (see their output above)")
            deadline = float("inf")
        await asyncio.sleep(0.3)
    say("PenPay is up. In another terminal: make demo. Ctrl-C stops everything.")


async def supervise(command: list[str], env: dict[str, str], checks: dict[str, str], ready_timeout_s: float) -> int:
    """Run honcho; forward SIGINT/SIGTERM to it; exit 0 when it stopped because we were asked to."""
    proc = await asyncio.create_subprocess_exec(*command, env=env)
    stopping = False

    def forward(signum: int) -> None:
        nonlocal stopping
        if not stopping:
            say(f"{signal.Signals(signum).name}: stopping every process")
        stopping = True
        if proc.returncode is None:
            proc.send_signal(signum)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, forward, signum)
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        watcher = asyncio.create_task(announce_ready(client, checks, ready_timeout_s))
        try:
            code = await proc.wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    if stopping:
        say("every process stopped")
        return 0 if code in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM) else code
    fail(f"a process stopped (honcho exit {code}), so every other one was stopped too: see its output above")
    return code or 1


@dataclass(frozen=True, slots=True)
class Plan:
    settings: Settings
    env_file: Path
    procfile: Path
    selected: list[str]
    path: str
    scale: str
    ready_timeout_s: float


def plan(args: argparse.Namespace) -> Plan | int:
    """The file-system half of the preflight: ``.env``, the settings, the Procfile and its programs."""
    env_file = Path(".env")
    ensure_env_file(env_file, Path(args.example))
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"the settings in {env_file} / the environment are invalid:\n{exc}")
        return 1
    procfile_path = Path(args.procfile).resolve()
    procfile = parse_procfile(procfile_path.read_text(encoding="utf-8")).processes
    selected = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else list(procfile)
    unknown = [name for name in selected if name not in procfile]
    if unknown:
        fail(f"no process {', '.join(unknown)} in {procfile_path} (it has {', '.join(procfile)})")
        return 2
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    missing = missing_programs(procfile, selected, path)
    if missing:
        others = [name for name in selected if name not in missing]
        fail(
            "not installed: "
            + ", ".join(f"{name} ({_executable(procfile[name])})" for name in missing)
            + ". Run make install"
            + (f", or start the others only: make run ONLY={','.join(others)}" if others else "")
        )
        return 1
    return Plan(settings, env_file, procfile_path, selected, path, args.scale, args.ready_timeout)


async def start(plan: Plan) -> int:
    settings = plan.settings
    problems = await unreachable(settings, plan.env_file)
    if problems:
        for paragraph in problems:
            fail(paragraph)
        return 1
    if settings.env is Environment.SANDBOX:
        for mismatch in sandbox_port_mismatches(settings):
            say(f"warning: {mismatch}")
    if not await prepare(settings):
        return 1

    where = endpoints(settings)
    say(f"PenPay ({settings.env.value}): starting {', '.join(plan.selected)} with honcho ({plan.procfile})")
    for name in plan.selected:
        if name in where:
            say(f"  {name:<8} {where[name].listens}")
    say(f"  {'MySQL':<8} {redact(settings.database_url)}")
    say(f"  {'Redis':<8} {redact(settings.redis_url)}")
    checks = {n: url for n in plan.selected if n in where and (url := where[n].ready_url) is not None}
    # -e /dev/null: honcho would otherwise load .env OVER the environment; the processes read .env themselves.
    command = [sys.executable, "-m", "honcho", "start", "-f", str(plan.procfile), "-e", os.devnull]
    if plan.scale:
        command += ["-c", plan.scale]
    command += plan.selected
    child_env = {**os.environ, "PATH": plan.path, "PYTHONUNBUFFERED": "1"}
    return await supervise(command, child_env, checks, plan.ready_timeout_s)


# ------------------------------------------------------------------------------------------------ health checks
async def check() -> int:
    settings = Settings()
    problems = await unreachable(settings, Path(".env"))
    for paragraph in problems:
        fail(paragraph)
    return 1 if problems else 0


async def probe(url: str) -> int:
    async with httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT_S)) as client:
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            fail(f"{url}: {exc!r}")
            return 1
    return 0 if response.is_success else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m penpay.devrun", description="PenPay on this machine")
    sub = parser.add_subparsers(dest="command")
    start = sub.add_parser("run", help="preflight, migrate, fund the sandbox ledger, then start the Procfile")
    for target in (parser, start):
        target.add_argument("--procfile", default=str(ROOT / "Procfile"))
        target.add_argument("--example", default=str(ROOT / ".env.example"), help="copied to .env when missing")
        target.add_argument("--only", default="", help="comma-separated Procfile processes (default: all)")
        target.add_argument("--scale", default="", help="honcho concurrency, e.g. worker=2")
        target.add_argument("--ready-timeout", type=float, default=60.0, help="seconds before warning")
    sub.add_parser("check", help="exit 0 when MySQL and Redis answer")
    probe_cmd = sub.add_parser("probe", help="exit 0 when URL answers 2xx")
    probe_cmd.add_argument("url")
    return parser


_SCALE = re.compile(r"^([A-Za-z0-9_-]+=[0-9]+)(,[A-Za-z0-9_-]+=[0-9]+)*$")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "check":
        sys.exit(asyncio.run(check()))
    if args.command == "probe":
        sys.exit(asyncio.run(probe(args.url)))
    if args.scale and not _SCALE.match(args.scale):
        fail(f"--scale {args.scale!r}: expected NAME=N[,NAME=N]")
        sys.exit(2)
    try:
        planned = plan(args)
        sys.exit(planned if isinstance(planned, int) else asyncio.run(start(planned)))
    except KeyboardInterrupt:  # Ctrl-C during the preflight: nothing was started yet
        sys.exit(130)


if __name__ == "__main__":
    main()
