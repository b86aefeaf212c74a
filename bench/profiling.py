"""Sampling profiles of running PenPay processes with py-spy, and what they say in a few lines.

``py-spy record --nonblocking`` reads the target's memory without pausing it, 100 times a second, and writes the
collapsed stacks (``frame;frame;... count``); only samples where the thread was running Python (not waiting in the
event loop's ``epoll``) are kept, so the profile shows where the CPU goes. The process's own CPU use over the same
window comes from ``/proc/<pid>/stat``. The raw files stay in the logs directory; the JSON keeps the summary.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>.*?)(?::\d+)?\)$")
PACKAGES = (
    "sqlalchemy",
    "asyncmy",
    "pydantic",
    "pydantic_core",
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "h11",
    "structlog",
    "redis",
    "httpx",
    "httpcore",
    "grpc",
    "jwt",
    "cryptography",
    "prometheus_client",
    "anyio",
    "penpay_domain",
    "penpay",
)
STDLIB = {"json": "json", "logging": "logging", "asyncio": "asyncio", "hashlib": "hashlib", "uuid": "uuid"}


def py_spy() -> str | None:
    """The py-spy next to this interpreter (``make bench`` installs it with the ``bench`` extra), or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its finished children) in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks


def context_switches(pid: int) -> tuple[int, int] | None:
    """(voluntary, involuntary) context switches of a process, summed over its threads (``/proc/<pid>/task/*/
    status``): a voluntary one is the process going to sleep (it waits for I/O, so each is followed by a wakeup), an
    involuntary one another process taking its core (preemption). A thread that ends meanwhile is left out; None
    when the process is gone."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return None
    voluntary = involuntary = 0
    for status in tasks.glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")  # noqa: S104 - an address compared, not bound


def server_pids() -> dict[str, int]:
    """MariaDB/MySQL and Redis server processes on this machine (by /proc/*/comm), for CPU accounting."""
    found: dict[str, int] = {}
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in ("mariadbd", "mysqld", "redis-server") and name not in found:
            found[name] = int(comm.parent.name)
    return found


PENPAY_PROGRAMS = ("penpay-api", "penpay-worker", "penpay-gateway", "penpay-sandbox")


def penpay_pids() -> dict[str, int]:
    """PenPay's processes running on this machine (a ``make run``), by their console script in the command line:
    ``api``, ``worker``, ``worker-2`` (a second one), ``gateway``, ``sandbox``."""
    found: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for cmdline in sorted(Path("/proc").glob("[0-9]*/cmdline"), key=lambda p: int(p.parent.name)):
        try:
            argv = [Path(a.decode(errors="replace")).name for a in cmdline.read_bytes().split(b"\0")]
        except OSError:
            continue
        program = argv[1] if argv[0].startswith("python") and len(argv) > 1 else argv[0]  # the venv's python runs it
        if program in PENPAY_PROGRAMS:
            name = program.removeprefix("penpay-")
            seen[name] += 1
            found[name if seen[name] == 1 else f"{name}-{seen[name]}"] = int(cmdline.parent.name)
    return found


class CpuMeter:
    """The CPU each process used from the meter's start until :meth:`per_unit` is asked: PenPay's processes,
    MariaDB and Redis (``/proc/<pid>/stat``) and the benchmark's own process (the load generator, and its polling of
    the database), per unit of work (a completed deposit or withdrawal, an accepted request). Their sum against the
    wall time says how busy the cores were, and the cores divided by it how many units a second they carry at full
    use: whether a burst was CPU-bound, and by whom, in every run (a process that exits meanwhile is left out).

    It counts each process's context switches per unit too (the load generator's among them): how often a process
    slept and woke up for a unit, and how often another took its core. On a machine that charges for waking up (the
    raw probe's "after idle" round trip), many switches a unit are what an even pace pays for beyond a burst."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = self._read()
        self._switches = self._read_switches()
        self._own = time.process_time()
        self._wall = time.monotonic()

    def _read_switches(self) -> dict[str, tuple[int, int]]:
        counted: dict[str, tuple[int, int]] = {}
        for name, pid in {**self._pids, "load generator": os.getpid()}.items():
            switches = context_switches(pid)
            if switches is not None:
                counted[name] = switches
        return counted

    def _read(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pid in self._pids.items():
            try:
                used[name] = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue
        return used

    def per_unit(self, completed: int, *, span_s: float | None = None) -> dict[str, Any]:
        """``span_s``: the burst's own span (first created -> last completed), for how busy the cores were
        while it ran; without it, the meter's whole window (which ends with the caller's last poll)."""
        end = self._read()
        switched = self._read_switches()
        wall = span_s if span_s else time.monotonic() - self._wall
        used = {name: end[name] - self._start[name] for name in end if name in self._start}
        used["load generator"] = time.process_time() - self._own
        total = sum(used.values())
        per = max(completed, 1)
        cores = os.cpu_count() or 1
        switches = {
            name: (switched[name][0] - self._switches[name][0], switched[name][1] - self._switches[name][1])
            for name in switched
            if name in self._switches
        }
        return {
            "ms_each": {
                name: round(1000 * seconds / per, 3) for name, seconds in sorted(used.items(), key=lambda kv: -kv[1])
            },
            "total_ms_each": round(1000 * total / per, 3),
            "cores_busy": round(total / wall, 2) if wall > 0 else None,
            "cores": cores,
            "full_use_per_s": round(cores * per / total, 1) if total > 0 and completed else None,
            "switches_each": {
                name: {"voluntary": round(v / per, 2), "preempted": round(n / per, 2)}
                for name, (v, n) in sorted(switches.items(), key=lambda kv: -kv[1][0])
            },
            "switches_total_each": {
                "voluntary": round(sum(v for v, _ in switches.values()) / per, 2),
                "preempted": round(sum(n for _, n in switches.values()) / per, 2),
            },
        }


def _package(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    for name in PACKAGES:
        if name in parts:
            return name
    stem = parts[-1].removesuffix(".py") if parts else path
    if "asyncio" in parts:
        return "asyncio"
    for top, label in STDLIB.items():
        if top in parts or stem == top:
            return label
    return "other"


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    return (m.group("name"), m.group("path")) if m else (frame, "")


@dataclass(slots=True)
class ProfileSummary:
    process: str
    samples: int = 0
    seconds: float = 0.0
    cpu_percent: float = 0.0  # of one core, over the window
    self_by_package: dict[str, float] = field(default_factory=dict)  # share of samples, by the leaf frame's package
    top_self: list[tuple[str, float]] = field(default_factory=list)
    top_penpay_inclusive: list[tuple[str, float]] = field(default_factory=list)
    raw_file: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "samples": self.samples,
            "seconds": self.seconds,
            "cpu_percent_of_one_core": round(self.cpu_percent, 1),
            "self_by_package_pct": self.self_by_package,
            "top_self_pct": [[name, share] for name, share in self.top_self],
            "top_penpay_inclusive_pct": [[name, share] for name, share in self.top_penpay_inclusive],
            "raw_file": self.raw_file,
            "error": self.error,
        }


def summarise(process: str, collapsed: str, *, top: int = 15) -> ProfileSummary:
    """Self time by package and by function, and the PenPay functions that hold the most samples (inclusive)."""
    by_package: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _parse(f) for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        total += count
        leaf_name, leaf_path = frames[-1]
        package = _package(leaf_path)
        by_package[package] += count
        by_self[f"{leaf_name} ({package})"] += count
        seen: set[str] = set()
        for name, path in frames:
            if "penpay" in path and name not in seen:
                seen.add(name)
                inclusive[f"{name} ({Path(path).name})"] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return ProfileSummary(
        process=process,
        samples=total,
        self_by_package={k: pct(v) for k, v in by_package.most_common()},
        top_self=[(k, pct(v)) for k, v in by_self.most_common(top)],
        top_penpay_inclusive=[(k, pct(v)) for k, v in inclusive.most_common(top)],
    )


async def record(process: str, pid: int, seconds: float, out_dir: Path, *, rate: int = 100) -> ProfileSummary:
    """Profile ``pid`` for ``seconds`` while the caller drives load; never raises (the error is in the summary)."""
    exe = py_spy()
    raw = out_dir / f"{process}-{pid}.collapsed"
    if exe is None:
        return ProfileSummary(process=process, error="py-spy is not installed (pip install -e '.[bench]')")
    try:
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        cpu0 = cpu_seconds(pid)
        proc = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(seconds + 30):
            _, err = await proc.communicate()
        cpu = cpu_seconds(pid) - cpu0
    except (OSError, TimeoutError) as exc:
        return ProfileSummary(process=process, error=repr(exc))
    if proc.returncode != 0 or not raw.exists():
        return ProfileSummary(process=process, error=err.decode(errors="replace")[-300:])
    summary = summarise(process, raw.read_text())
    summary.seconds = max(1, round(seconds))
    summary.cpu_percent = 100 * cpu / summary.seconds
    summary.raw_file = str(raw)
    return summary
