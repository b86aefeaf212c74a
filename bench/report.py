"""The benchmark's output: the machine, the targets of issue 6, a readable table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

REDIS_TIMEOUT_S = 5.0

# Issue 6 on a 2-core machine running everything at once.
TARGETS = {
    "api_accepted_per_s": (">=", 1500.0, "accepted POST /deposit per second at saturation"),
    "api_p99_ms_at_500": ("<=", 25.0, "p99 latency (ms) at 500 req/s offered, with no request failed"),
    "e2e_completed_per_s": (">=", 400.0, "completed deposits per second end to end (best worker count)"),
    "e2e_ratio_to_raw_pct": (">=", 5.0, "end-to-end throughput as % of the raw commit limit"),
}


def _meminfo_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _build_of(interpreter: str, root: Path) -> dict[str, Any] | None:
    """``scripts/python_build.py``'s answer for ``interpreter`` (executable, version, build, rank), or None when it is
    not a usable Python 3.11."""
    try:
        line = subprocess.run(  # noqa: S603 - an interpreter on the repository's own script
            [interpreter, str(root / "scripts" / "python_build.py")],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        rank, executable, version, build = line.rstrip("\n").split("\t")
        return {"executable": executable, "version": version, "build": build, "rank": int(rank)}
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def python_build(root: Path) -> dict[str, Any]:
    """Which build of Python runs the platform (the one ``make install`` chose for ``.venv``): the same code needs
    16-29 % fewer instructions on a PGO/LTO build than on a plain one, so runs compare by it too."""
    return _build_of(sys.executable, root) or {"executable": os.path.realpath(sys.executable), "build": "unknown"}


def faster_python(root: Path, interpreter: str) -> str | None:
    """A line for the operator when ``make install`` would now build ``.venv`` with a faster build than
    ``interpreter``'s (a ``.venv`` made earlier, or with ``PYTHON=``): the figures would be those of a slower
    interpreter. ``scripts/venv-note`` decides, as it does after ``make install``."""
    try:
        said = subprocess.run(  # noqa: S603 - the repository's own script
            [str(root / "scripts" / "venv-note"), interpreter], capture_output=True, text=True, timeout=120, check=False
        ).stderr.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return said.removeprefix("note: ") or None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def machine(redis_url: str, mariadb_version: str, root: Path) -> dict[str, Any]:
    client = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        info = await client.info("server")
        redis_version = str(info.get("redis_version", "?"))
    finally:
        await client.aclose()
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_mb": _meminfo_mb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_build": python_build(root),
        "mariadb": mariadb_version,
        "redis": redis_version,
        "python_loop_mops": python_speed(),
    }


def code(root: Path) -> dict[str, Any]:
    """Which code ran: the checkout's commit and whether it had changes, and ``PYTHONPATH`` (set when the
    processes import another tree, e.g. an older commit's ``git worktree`` for an A/B run)."""
    import penpay  # noqa: PLC0415 - where the processes import PenPay from

    def git(*args: str, cwd: Path = root) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)  # noqa: S603, S607
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    penpay_from = Path(penpay.__file__).resolve().parent
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "penpay_from": str(penpay_from),
        # the commit of the tree PenPay was imported from (another one than ``commit`` in an A/B run)
        "penpay_commit": git("rev-parse", "HEAD", cwd=penpay_from),
    }


def python_speed(iterations: int = 3_000_000) -> float:
    """Millions of iterations per second of a plain Python loop, best of three: how fast this machine runs Python
    right now (shared cloud machines vary by 2x from one hour to the next), so that runs compare fairly."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(iterations / best / 1e6, 1)


def evaluate(figures: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (op, goal, what) in TARGETS.items():
        value = figures.get(name)
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out[name] = {"what": what, "target": f"{op} {goal:g}", "value": value, "met": met}
    return out


def fmt(value: object) -> str:
    """A figure as the table prints it: thousands separated, one decimal, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[tuple[str, object, str]]) -> str:
    """Three columns: what, value, note."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(fmt(r[1])) for r in rows)
    lines = []
    for what, value, note in rows:
        if not what and value is None:
            lines.append("")
            continue
        lines.append(f"  {what.ljust(width)}  {fmt(value).rjust(vwidth)}  {note}".rstrip())
    return "\n".join(lines)


def write(results: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
