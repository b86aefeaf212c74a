"""``make bench``: PenPay's load benchmark, in one run on this machine (issue 6).

Phases, in order (durations and sizes: ``bench.config``, ``BENCH_*`` variables):

1. raw limits: durable ledger-style commits/s and Redis XADD/s from Python (``bench.probe``);
2. the platform: sandbox, gateway, API and one worker process started as ``make run`` starts them (the console
   scripts), on free ports, against a throwaway database and a private Redis prefix, with every provider delay at 0
   (``tests/e2e/platform.py``); or a running one when ``BENCH_API_URL`` is set;
3. API at saturation: closed loop, ``saturation_concurrency`` clients posting deposits for ``saturation_seconds``;
4. API latency: once the worker has completed what saturation accepted and the platform is idle, open loop,
   deposits due at ``latency_rate``/s for ``latency_seconds``; then the same, one rate at a time, at each of
   ``curve_rates`` for ``curve_seconds`` (the latency curve, with every process's CPU per completed deposit), each
   drained before the next;
5. end to end, one worker process: ``e2e_deposits`` deposits posted as fast as the API takes them, each followed to
   COMPLETED, ``e2e_repeats`` times (the figure is the median burst: one burst moves by +-15 % on a shared machine);
   then deposits paced at half that throughput (completion time without queueing); then ``e2e_withdrawals``
   withdrawals (accounts linked and codes fetched beforehand);
6. scaling: the deposit bursts again with two worker processes;
7. profiles: py-spy on the API and the worker during a deposit burst (``bench.profiling``);
8. round trips: the API and a worker restarted with every SQL statement counted, ``count_deposits`` deposits one
   at a time (``bench.sqlcount``);
9. checks: ``GET /admin/ledger/check``, ``GET /admin/audit/verify`` and every transaction terminal;
10. the raw limits again, the platform stopped: the raw figure is the mean of the two probes (this machine's
    limit moves within the hour; the end-to-end bursts ran between them).

It prints a table, writes ``bench/results/<date-time>.json`` and exits 0 whether or not the targets are met (the
figures are the product); it exits 1 only if the harness itself failed or a check after the run failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import flows, probe, profiling, report, worker_logs
from bench.config import ROOT, BenchConfig, ConfigError
from bench.http import HttpPool
from bench.load import LoadResult, closed_loop, open_loop, percentile
from penpay.cli import mint_token
from penpay.settings import Settings

if TYPE_CHECKING:
    from tests.e2e.platform import Platform

CHECK_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 30.0
SHOWN_MS = 0.05  # a process's CPU per deposit below this is left out of the table (it is in the JSON)
P99_GOAL_MS = report.TARGETS["api_p99_ms_at_500"][1]


def _command(name: str) -> tuple[str, ...]:
    """A process's command as ``make run`` runs it (imported late: ``tests.e2e.platform`` reads where to log when it
    is imported, which ``_own_platform`` sets first)."""
    from tests.e2e.platform import procfile  # noqa: PLC0415

    return procfile()[name]


def say(line: str) -> None:
    sys.stdout.write(f"bench | {line}\n")
    sys.stdout.flush()


class Bench:
    """The phases against one platform (``platform`` is None when it was not started here)."""

    def __init__(
        self,
        cfg: BenchConfig,
        settings: Settings,
        *,
        api: str,
        control: str,
        platform: Platform | None,
        logs: Path,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.api = api
        self.control = control
        self.platform = platform
        self.logs = logs
        self.tag = uuid.uuid4().hex[:6]
        self.engine: AsyncEngine = create_async_engine(
            settings.database_url, pool_size=2, connect_args={"connect_timeout": 5}
        )
        self.pool = HttpPool(api, max_connections=cfg.max_connections, timeout_s=30.0)
        self.out: dict[str, Any] = {}

    def _worker_logs(self) -> list[Path]:
        from tests.e2e.platform import LOGS  # noqa: PLC0415 - where the platform's processes log

        assert self.platform is not None
        return sorted(LOGS.glob(f"{self.platform.env['PENPAY_STREAM_PREFIX']}-worker*.log"))

    def mint(self, user: str) -> str:
        return mint_token(self.settings, sub=user, ttl_s=4 * 3600)

    async def run(self) -> dict[str, Any]:
        try:
            await self._api_phases()
            await self._latency_curve()
            await self._e2e_phases()
            if self.platform is not None:
                await self._scaling()
                await self._api_alone()
                if self.cfg.profile:
                    await self._profiles()
                await self._round_trips()
            await self._checks()
            if self.platform is not None:
                self.out["worker_logs"] = worker_logs.summarise(self._worker_logs())
                say(f"  worker retries: {self.out['worker_logs']['handler_failures'] or 'none'}")
        finally:
            await self.pool.aclose()
            await self.engine.dispose()
        return self.out

    # ------------------------------------------------------------------------------------------------ API
    async def _api_phases(self) -> None:
        sat, lat, cpu = await self._api_load("", drain_between=True)
        self.out["api_saturation"], self.out["api_latency"] = sat.summary(), self._latency_summary(lat)
        if cpu is not None:
            self.out["api_saturation"]["cpu"] = cpu
        say(f"  draining the fixed rate's {len(lat.created_ids):,} deposits")
        await flows.wait_terminal(self.engine, lat.created_ids, timeout_s=self.cfg.drain_timeout_s)
        await self._quiet("the deposits of requests the load generator gave up on")

    async def _api_alone(self) -> None:
        """A diagnostic, not a target's figure: the API phases again with the worker stopped, so the API has the
        cores to itself (no backlog drained beside it, no STK callbacks); the deposits wait for the worker."""
        p = self.platform
        assert p is not None
        say("API alone (diagnostic): the same two phases with the worker stopped")
        p.stop("worker")
        try:
            sat, lat, cpu = await self._api_load("x", drain_between=False)
        finally:
            p.start("worker", *_command("worker"))
        self.out["api_alone"] = {"saturation": {**sat.summary(), "cpu": cpu}, "latency": self._latency_summary(lat)}
        say(f"  then the worker again: draining {len(sat.created_ids) + len(lat.created_ids):,} deposits")
        await flows.wait_terminal(self.engine, sat.created_ids + lat.created_ids, timeout_s=self.cfg.drain_timeout_s)
        await self._quiet("the API-alone phases")

    async def _api_load(
        self, label: str, *, drain_between: bool
    ) -> tuple[LoadResult, LoadResult, dict[str, Any] | None]:
        """Saturation (closed loop) then the fixed offered rate (open loop), each with fresh users' keys; the CPU
        each process used during saturation per accepted deposit (None against a running platform).

        ``drain_between``: the worker completes what saturation accepted, and the platform is idle, before the fixed
        rate starts, so that its latency is the rate's own and not the rate's plus a drain of the seconds of
        overload before it (until round 17 the fixed rate ran while the worker drained them; ``api_backlog`` is
        that drain, timed on its own now). The API-alone phases run with the worker stopped: nothing drains."""
        cfg = self.cfg
        deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}a{label}")
        say(f"API at saturation: {cfg.saturation_concurrency} clients for {cfg.saturation_seconds:g} s")
        meter = self._cpu_meter()
        sat = await closed_loop(
            self.pool,
            deposits.request,
            concurrency=cfg.saturation_concurrency,
            duration_s=cfg.saturation_seconds,
        )
        say(f"  accepted {sat.accepted_per_s:,.1f}/s")
        cpu = _metered(meter, sat.accepted, sat.elapsed_s, "accepted deposit")
        if drain_between:
            say(f"  draining the {len(sat.created_ids):,} deposits it accepted before the fixed rate")
            drained = await flows.wait_terminal(self.engine, sat.created_ids, timeout_s=cfg.drain_timeout_s)
            self.out["api_backlog"] = drained.summary()
            say(f"  {drained.completed:,} completed in {drained.span_s:,.1f} s ({drained.completed_per_s:,.1f}/s)")
            await self._quiet("the saturation phase")

        deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}b{label}")
        say(f"API latency: open loop at {cfg.latency_rate:g} req/s for {cfg.latency_seconds:g} s")
        lat = await open_loop(
            self.pool,
            deposits.request,
            rate=cfg.latency_rate,
            duration_s=cfg.latency_seconds,
            timeout_s=cfg.request_timeout_s,
        )
        summary = self._latency_summary(lat)
        say(f"  p50 {summary['latency_ms']['p50']} ms, p99 {summary['p99_with_failures_ms']} ms, sent {lat.sent}")
        return sat, lat, cpu

    async def _latency_curve(self) -> None:
        """The API's latency beside the worker at offered rates the platform can carry, each from an idle platform,
        with every process's CPU per completed deposit: up to which rate the 25 ms p99 holds here, and what an even
        pace costs a deposit against a burst."""
        cfg = self.cfg
        points: list[dict[str, Any]] = []
        for rate in cfg.curve():
            deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}c{len(points)}")
            say(f"API latency beside the worker: open loop at {rate:g} req/s for {cfg.curve_seconds:g} s")
            meter = self._cpu_meter()
            lat = await open_loop(
                self.pool, deposits.request, rate=rate, duration_s=cfg.curve_seconds, timeout_s=cfg.request_timeout_s
            )
            done = await flows.wait_terminal(self.engine, lat.created_ids, timeout_s=cfg.drain_timeout_s)
            api, completion = self._latency_summary(lat), done.summary()
            point: dict[str, Any] = {"rate": rate, "api": api, "completion": completion}
            ms = completion["completion_ms"]
            say(
                f"  API p50 {api['latency_ms']['p50']} ms, p99 {api['p99_with_failures_ms']} ms; completion p99 "
                f"{ms['p99']} ms"  # type: ignore[index]
            )
            if (cpu := _metered(meter, done.completed, done.span_s, "completed deposit")) is not None:
                point["cpu"] = cpu
            points.append(point)
            await self._quiet(f"the curve at {rate:g} req/s")
        self.out["api_curve"] = points

    def _latency_summary(self, lat: LoadResult) -> dict[str, Any]:
        summary = lat.summary()
        summary["p99_with_failures_ms"] = _p99_with_failures_ms(lat, self.cfg.request_timeout_s)
        return summary

    # ------------------------------------------------------------------------------------------------ end to end
    async def _quiet(self, what: str) -> dict[str, Any]:
        """Wait until every transaction in the database is terminal, so the next phase starts on an idle platform."""
        quiet = await flows.wait_quiet(self.engine, timeout_s=self.cfg.drain_timeout_s)
        self.out.setdefault("quiet_waits", []).append({"after": what, **quiet})
        say(
            f"  idle again after {quiet['waited_s']} s ({quiet['transactions']:,} transactions, all terminal: "
            f"{'yes' if quiet['all_terminal'] else 'NO'})"
        )
        return quiet

    async def _deposit_burst(self, label: str) -> dict[str, Any]:
        cfg = self.cfg
        deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}{label}")
        say(f"end to end ({label}): {cfg.e2e_deposits:,} deposits, {cfg.e2e_concurrency} clients")
        meter = self._cpu_meter()
        posted = await closed_loop(self.pool, deposits.request, concurrency=cfg.e2e_concurrency, total=cfg.e2e_deposits)
        done = await flows.wait_terminal(self.engine, posted.created_ids, timeout_s=cfg.drain_timeout_s)
        out = {"posted": posted.summary(), "completion": done.summary()}
        ms = done.summary()["completion_ms"]
        say(f"  {done.completed_per_s:,.1f} completed/s; completion p50 {ms['p50']} ms, p99 {ms['p99']} ms")  # type: ignore[index]
        if (cpu := _metered(meter, done.completed, done.span_s, "completed deposit")) is not None:
            out["cpu"] = cpu
        return out

    def _cpu_meter(self) -> profiling.CpuMeter | None:
        """Every process of the platform started here, MariaDB and Redis. Against a running platform, the PenPay
        processes found on this machine by their command lines when its API is on this machine; None when it is
        elsewhere (its processes cannot be read from here)."""
        if self.platform is not None:
            live = {name: proc.pid for name, proc in self.platform.procs.items() if proc.poll() is None}
        elif urlsplit(self.api).hostname in profiling.LOCAL_HOSTS and (found := profiling.penpay_pids()):
            live = found
        else:
            return None
        return profiling.CpuMeter(live | profiling.server_pids())

    async def _deposit_bursts(self, label: str) -> dict[str, Any]:
        """``e2e_repeats`` bursts, each on an idle platform; the median one (by completed/s), with every rate."""
        bursts = []
        for i in range(max(1, self.cfg.e2e_repeats)):
            if i:
                await self._quiet(f"burst {label}{i - 1}")
            bursts.append(await self._deposit_burst(f"{label}{i}"))
        return median_burst(bursts)

    async def _e2e_phases(self) -> None:
        cfg = self.cfg
        self.out["e2e_deposits_1"] = await self._deposit_bursts("d1")

        rate = max(1.0, 0.5 * float(self.out["e2e_deposits_1"]["completion"]["completed_per_s"]))
        deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}p")
        say(f"end to end, paced: deposits at {rate:,.1f}/s for {cfg.paced_seconds:g} s")
        paced = await open_loop(
            self.pool, deposits.request, rate=rate, duration_s=cfg.paced_seconds, timeout_s=cfg.request_timeout_s
        )
        done = await flows.wait_terminal(self.engine, paced.created_ids, timeout_s=cfg.drain_timeout_s)
        self.out["e2e_deposits_paced"] = {
            "rate": round(rate, 1),
            "posted": paced.summary(),
            "completion": done.summary(),
        }
        ms = done.summary()["completion_ms"]
        say(f"  completion p50 {ms['p50']} ms, p99 {ms['p99']} ms")  # type: ignore[index]

        say(f"withdrawals: linking {cfg.e2e_withdrawals:,} sandbox accounts and fetching their codes")
        prepared = await flows.prepare_withdrawals(
            self.api, self.control, self.mint, count=cfg.e2e_withdrawals, tag=self.tag
        )
        withdrawals = flows.Withdrawals(self.pool, prepared, tag=self.tag)
        say(f"end to end: {cfg.e2e_withdrawals:,} withdrawals, {cfg.e2e_concurrency} clients")
        meter = self._cpu_meter()
        posted = await closed_loop(
            self.pool, withdrawals.request, concurrency=cfg.e2e_concurrency, total=cfg.e2e_withdrawals
        )
        done = await flows.wait_terminal(self.engine, posted.created_ids, timeout_s=cfg.drain_timeout_s)
        self.out["e2e_withdrawals"] = {"posted": posted.summary(), "completion": done.summary()}
        ms = done.summary()["completion_ms"]
        say(f"  {done.completed_per_s:,.1f} completed/s; completion p50 {ms['p50']} ms, p99 {ms['p99']} ms")  # type: ignore[index]
        if (cpu := _metered(meter, done.completed, done.span_s, "completed withdrawal")) is not None:
            self.out["e2e_withdrawals"]["cpu"] = cpu

    async def _scaling(self) -> None:
        assert self.platform is not None
        say("scaling: a second worker process")
        self.platform.start("worker2", *_command("worker"))
        await asyncio.sleep(2)
        try:
            self.out["e2e_deposits_2"] = await self._deposit_bursts("d2")
        finally:
            self.platform.stop("worker2")

    # ------------------------------------------------------------------------------------------------ profiles
    async def _profiles(self) -> None:
        assert self.platform is not None
        cfg = self.cfg
        out_dir = self.logs / "profiles"
        api_pid, worker_pid = self.platform.procs["api"].pid, self.platform.procs["worker"].pid
        deposits = flows.Deposits(self.pool, self.mint, users=cfg.users, tag=f"{self.tag}f")
        say(f"profiles: py-spy on the API ({api_pid}) and the worker ({worker_pid}) for {cfg.profile_seconds:g} s")
        pids = {name: proc.pid for name, proc in self.platform.procs.items()} | profiling.server_pids()
        cpu0 = {name: profiling.cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        posted, api_profile, worker_profile = await asyncio.gather(
            closed_loop(
                self.pool, deposits.request, concurrency=cfg.saturation_concurrency, duration_s=cfg.profile_seconds
            ),
            profiling.record("api", api_pid, cfg.profile_seconds, out_dir),
            profiling.record("worker", worker_pid, cfg.profile_seconds, out_dir),
        )
        elapsed = time.monotonic() - started
        cpu = {name: round(100 * (profiling.cpu_seconds(pid) - cpu0[name]) / elapsed, 1) for name, pid in pids.items()}
        self.out["profiles"] = {
            "api": api_profile.as_dict(),
            "worker": worker_profile.as_dict(),
            "cpu_percent_of_one_core": cpu,
        }
        say(f"  CPU, % of one core: {cpu}")
        for prof in (api_profile, worker_profile):
            say(f"  {prof.process}: {prof.cpu_percent:.0f}% of a core, {prof.samples} samples {prof.error}".rstrip())
        await flows.wait_terminal(self.engine, posted.created_ids, timeout_s=cfg.drain_timeout_s)

    # ------------------------------------------------------------------------------------------------ round trips
    async def _round_trips(self) -> None:
        """Restart the API and the worker with statement counting, post deposits, count: one at a time (every
        batch a batch of one: the cost of a lone deposit), then as a burst (what a deposit costs under load, where
        the API and the worker share their units of work across the deposits in flight)."""
        cfg = self.cfg
        say(f"round trips: {cfg.count_deposits} deposits, one at a time, with every SQL statement counted")
        self.out["round_trips"] = await self._count("one", concurrency=1, total=cfg.count_deposits)
        burst = cfg.count_deposits * 5
        say(f"round trips under load: {burst} deposits from {cfg.e2e_concurrency} clients, counted the same way")
        self.out["round_trips_burst"] = await self._count("burst", concurrency=cfg.e2e_concurrency, total=burst)

    async def _count(self, label: str, *, concurrency: int, total: int) -> dict[str, Any]:
        p = self.platform
        assert p is not None
        counts_dir = self.logs / "sqlcount"
        counts_dir.mkdir(parents=True, exist_ok=True)
        files = {name: counts_dir / f"{name}-{self.tag}-{label}.json" for name in ("api", "worker")}
        await self._restart(
            lambda: (p.stop("api"), p.stop("worker")),
            lambda: _start_counted(p, "api", files["api"]),
        )
        if concurrency == 1:  # a lone deposit's cost: its worker steps do not wait for company (they would, ~8 of
            p.env["PENPAY_WORKER_LINGER_MS"] = "0"  # these deposits posted back to back sharing each unit of work)
        _start_counted(p, "worker", files["worker"])
        p.env.pop("PENPAY_WORKER_LINGER_MS", None)
        await asyncio.sleep(2)
        deposits = flows.Deposits(self.pool, self.mint, users=self.cfg.users, tag=f"{self.tag}c{label}")
        posted = await closed_loop(self.pool, deposits.request, concurrency=concurrency, total=total)
        done = await flows.wait_terminal(self.engine, posted.created_ids, timeout_s=self.cfg.drain_timeout_s)
        await self._restart(
            lambda: (p.stop("api"), p.stop("worker")),
            lambda: (p.env.pop("BENCH_SQLCOUNT_FILE", None), p.start("api", "penpay-api")),
        )
        p.start("worker", *_command("worker"))
        counted = {name: json.loads(path.read_text()) for name, path in files.items() if path.exists()}
        n = max(1, done.completed)
        per: dict[str, Any] = {"deposits": posted.accepted, "completed": done.completed, "concurrency": concurrency}
        for name, data in counted.items():
            statements = sum(int(v) for v in data.get("statements", {}).values())
            per[name] = {
                "statements_per_deposit": round(statements / n, 1),
                "commits_per_deposit": round(int(data.get("commit", 0)) / n, 2),
                "rollbacks_per_deposit": round(int(data.get("rollback", 0)) / n, 2),
                "by_statement_per_deposit": {k: round(int(v) / n, 2) for k, v in data.get("statements", {}).items()},
            }
        for name in ("api", "worker"):
            if name in per:
                say(
                    f"  {name}: {per[name]['statements_per_deposit']} statements, "
                    f"{per[name]['commits_per_deposit']} commits per deposit"
                )
        return per

    async def _restart(self, stop: Callable[[], object], start: Callable[[], object]) -> None:
        stop()
        start()
        await _wait_ready(f"{self.api}/readyz")

    # ------------------------------------------------------------------------------------------------ checks
    async def _checks(self) -> None:
        say("checks: ledger, audit chain, every transaction terminal")
        admin = {"Authorization": f"Bearer {mint_token(self.settings, sub='bench-admin', role='admin')}"}
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            ledger = (await client.get(f"{self.api}/admin/ledger/check", headers=admin)).json()
            audit = (await client.get(f"{self.api}/admin/audit/verify", headers=admin)).json()
        state = await flows.database_state(self.engine)
        self.out["checks"] = {
            "ledger_ok": bool(ledger.get("ok")),
            "ledger": ledger,
            "audit_ok": bool(audit.get("ok")),
            "audit": audit,
            "all_terminal": state["all_terminal"],
            "statuses": state["statuses"],
        }
        say(
            f"  ledger balances: {'ok' if ledger.get('ok') else 'NOT OK'}; audit chain: "
            f"{'ok' if audit.get('ok') else 'NOT OK'}; every transaction terminal: "
            f"{'yes' if state['all_terminal'] else 'NO'} {state['statuses']}"
        )


def median_burst(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """The burst with the median completed/s (the lower middle one of an even count), its phase's figures, with
    ``repeats``: every burst's completed/s in the order run."""
    rates = [float(b["completion"]["completed_per_s"]) for b in bursts]
    median = sorted(range(len(bursts)), key=lambda i: rates[i])[(len(bursts) - 1) // 2]
    if len(bursts) > 1:
        say(f"  median of {len(bursts)} bursts: {rates[median]:,.1f} completed/s (all: {rates})")
    return {**bursts[median], "repeats": rates}


def _metered(meter: profiling.CpuMeter | None, count: int, span_s: float, what: str) -> dict[str, Any] | None:
    """The meter's reading per ``what`` (None without a meter), said in one line."""
    if meter is None:
        return None
    cpu = meter.per_unit(count, span_s=span_s)
    by_process = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu["ms_each"].items())
    say(f"  CPU per {what} {cpu['total_ms_each']} ms ({by_process}); cores busy {cpu['cores_busy']} of {cpu['cores']}")
    switches = cpu["switches_total_each"]
    say(f"  context switches per {what}: {switches['voluntary']} (sleep and wake), {switches['preempted']} preempted")
    return cpu


def _p99_with_failures_ms(result: LoadResult, timeout_s: float) -> float:
    """p99 over every request sent, a failed one counted as taking the timeout (so a lower bound when >1 % failed)."""
    failed = result.sent - result.accepted
    return round(percentile(result.latencies_s + [timeout_s] * failed, 99) * 1000, 2)


def _start_counted(p: Platform, name: str, out: Path) -> None:
    """The Procfile's process ``name`` (``penpay-api`` or ``penpay-worker`` with its arguments) under counting."""
    program, *args = _command(name)
    p.env["BENCH_SQLCOUNT_FILE"] = str(out)
    # the repository root for ``bench`` itself, after any PYTHONPATH the bench was given (an A/B run imports an
    # older ``penpay`` from a git worktree that way: the counted processes must run that code too)
    given = os.environ.get("PYTHONPATH", "")
    p.env["PYTHONPATH"] = os.pathsep.join(part for part in (given, str(ROOT)) if part)
    p.start(name, "python", "-m", "bench.sqlcount", program.removeprefix("penpay-"), *args)


async def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {READY_TIMEOUT_S:g} s")


# ---------------------------------------------------------------------------------------------------- figures
def figures(raw: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    def completion(phase: str) -> dict[str, Any]:
        value: dict[str, Any] = out.get(phase, {}).get("completion", {})
        return value

    lat = out.get("api_latency", {})
    alone = out.get("api_alone", {})
    d1, d2, wd, paced = (
        completion("e2e_deposits_1"),
        completion("e2e_deposits_2"),
        completion("e2e_withdrawals"),
        (completion("e2e_deposits_paced")),
    )
    best = max(d1.get("completed_per_s", 0.0), d2.get("completed_per_s", 0.0)) if d1 else None
    cpu: dict[str, Any] = out.get("e2e_deposits_1", {}).get("cpu", {})
    sat_cpu: dict[str, Any] = out.get("api_saturation", {}).get("cpu") or {}
    alone_cpu: dict[str, Any] = alone.get("saturation", {}).get("cpu") or {}
    commits = raw["commits_per_s"]
    rt = out.get("round_trips", {})
    rtb = out.get("round_trips_burst", {})
    checks = out.get("checks", {})
    curve = [curve_point(point) for point in out.get("api_curve", [])]
    failed_at_rate = (lat["sent"] - lat["accepted"]) if lat else None
    at_rate = {
        "rate": out.get("config", {}).get("latency_rate"),
        "p99_ms": lat.get("p99_with_failures_ms"),
        "failed": failed_at_rate,
    }
    return {
        "raw_commits_per_s": commits,
        "raw_commits_probes": raw.get("commits_probes", [commits]),
        "raw_hot_row_commits_per_s": raw["hot_row_commits_per_s"],
        "raw_xadd_per_s": raw["xadd_per_s"],
        "raw_xadd_pipelined_per_s": raw["xadd_pipelined_per_s"],
        "raw_round_trip_cpu_us": raw.get("round_trip_cpu_us"),
        "api_accepted_per_s": out.get("api_saturation", {}).get("accepted_per_s"),
        "api_p50_ms_at_500": lat.get("latency_ms", {}).get("p50"),
        "api_p95_ms_at_500": lat.get("latency_ms", {}).get("p95"),
        "api_p99_ms_at_500": lat.get("p99_with_failures_ms"),
        "api_failed_at_500": failed_at_rate,
        # of those, the API's own refusals: 503 "overloaded", a request queued past PENPAY_INTAKE_QUEUE_DEADLINE_MS
        "api_refused_at_500": lat.get("statuses", {}).get("503", 0) if lat else None,
        # how late the load generator itself sent those requests (its share of the latency, on the same cores)
        "api_generator_lag_p99_ms_at_500": lat.get("lag_p99_ms") if lat else None,
        "api_offered_rate": out.get("config", {}).get("latency_rate"),
        "api_curve": curve,
        "api_best_rate_within_p99_goal": best_rate_within([*curve, at_rate], P99_GOAL_MS),
        "api_saturation_cores_busy": sat_cpu.get("cores_busy"),
        "api_saturation_api_ms_per_deposit": sat_cpu.get("ms_each", {}).get("api"),
        "api_alone_accepted_per_s": alone.get("saturation", {}).get("accepted_per_s"),
        "api_alone_cpu_ms_per_deposit": alone_cpu.get("total_ms_each"),
        "api_alone_cpu_ms_per_deposit_by_process": alone_cpu.get("ms_each"),
        "api_alone_full_use_per_s": alone_cpu.get("full_use_per_s"),
        "api_alone_p99_ms_at_500": alone.get("latency", {}).get("p99_with_failures_ms"),
        "e2e_deposits_per_s_1_worker": d1.get("completed_per_s"),
        "e2e_deposits_repeats_1_worker": out.get("e2e_deposits_1", {}).get("repeats"),
        "e2e_deposits_peak_5s_per_s_1_worker": d1.get("peak_5s_completed_per_s"),
        "e2e_deposit_p50_ms": d1.get("completion_ms", {}).get("p50"),
        "e2e_deposit_p99_ms": d1.get("completion_ms", {}).get("p99"),
        "e2e_deposit_paced_rate": out.get("e2e_deposits_paced", {}).get("rate"),
        "e2e_deposit_paced_p50_ms": paced.get("completion_ms", {}).get("p50"),
        "e2e_deposit_paced_p99_ms": paced.get("completion_ms", {}).get("p99"),
        "e2e_withdrawals_per_s": wd.get("completed_per_s"),
        "e2e_withdrawal_cpu_ms": out.get("e2e_withdrawals", {}).get("cpu", {}).get("total_ms_each"),
        "e2e_withdrawal_cores_busy": out.get("e2e_withdrawals", {}).get("cpu", {}).get("cores_busy"),
        "e2e_withdrawal_cpu_ms_by_process": out.get("e2e_withdrawals", {}).get("cpu", {}).get("ms_each"),
        "e2e_withdrawal_switches": out.get("e2e_withdrawals", {}).get("cpu", {}).get("switches_total_each"),
        "e2e_withdrawal_p50_ms": wd.get("completion_ms", {}).get("p50"),
        "e2e_withdrawal_p99_ms": wd.get("completion_ms", {}).get("p99"),
        "e2e_cpu_ms_per_deposit": cpu.get("total_ms_each"),
        "e2e_cpu_ms_per_deposit_by_process": cpu.get("ms_each"),
        "e2e_cores_busy": cpu.get("cores_busy"),
        "e2e_switches_per_deposit": cpu.get("switches_total_each"),
        "e2e_full_use_deposits_per_s": cpu.get("full_use_per_s"),
        "e2e_deposits_per_s_2_workers": d2.get("completed_per_s"),
        "e2e_deposits_repeats_2_workers": out.get("e2e_deposits_2", {}).get("repeats"),
        "e2e_deposits_peak_5s_per_s_2_workers": d2.get("peak_5s_completed_per_s"),
        "e2e_deposit_p50_ms_2_workers": d2.get("completion_ms", {}).get("p50"),
        "e2e_deposit_p99_ms_2_workers": d2.get("completion_ms", {}).get("p99"),
        "e2e_completed_per_s": best,
        "e2e_ratio_to_raw_pct": round(100 * best / commits, 2) if best is not None and commits else None,
        "sql_statements_per_deposit_api": rt.get("api", {}).get("statements_per_deposit"),
        "sql_commits_per_deposit_api": rt.get("api", {}).get("commits_per_deposit"),
        "sql_statements_per_deposit_worker": rt.get("worker", {}).get("statements_per_deposit"),
        "sql_commits_per_deposit_worker": rt.get("worker", {}).get("commits_per_deposit"),
        "sql_statements_per_deposit_api_burst": rtb.get("api", {}).get("statements_per_deposit"),
        "sql_commits_per_deposit_api_burst": rtb.get("api", {}).get("commits_per_deposit"),
        "sql_statements_per_deposit_worker_burst": rtb.get("worker", {}).get("statements_per_deposit"),
        "sql_commits_per_deposit_worker_burst": rtb.get("worker", {}).get("commits_per_deposit"),
        "ledger_ok": checks.get("ledger_ok"),
        "audit_ok": checks.get("audit_ok"),
        "all_terminal": checks.get("all_terminal"),
    }


def curve_point(point: dict[str, Any]) -> dict[str, Any]:
    """One rate of the latency curve, as the figures give it."""
    api, cpu = point["api"], point.get("cpu") or {}
    return {
        "rate": point["rate"],
        "p50_ms": api.get("latency_ms", {}).get("p50"),
        "p99_ms": api.get("p99_with_failures_ms"),
        "failed": api["sent"] - api["accepted"],
        "completion_p99_ms": point["completion"].get("completion_ms", {}).get("p99"),
        "cpu_ms_per_deposit": cpu.get("total_ms_each"),
        "cores_busy": cpu.get("cores_busy"),
        "switches_per_deposit": (cpu.get("switches_total_each") or {}).get("voluntary"),
    }


def best_rate_within(points: list[dict[str, Any]], goal_ms: float) -> float:
    """The highest offered rate whose p99 (failures counted) was within ``goal_ms`` with no request failed; 0.0 if
    none was."""
    within = [
        float(pt["rate"])
        for pt in points
        if pt.get("rate") is not None
        and pt.get("failed") == 0
        and pt.get("p99_ms") is not None
        and pt["p99_ms"] <= goal_ms
    ]
    return max(within, default=0.0)


def render(f: dict[str, Any], targets: dict[str, dict[str, Any]], machine: dict[str, Any]) -> str:
    def mark(name: str) -> str:
        t = targets[name]
        verdict = "-" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        return f"target {t['target']}: {verdict}"

    rows: list[tuple[str, object, str]] = [
        (
            "raw: durable commits/s (txn + 2 entries)",
            f["raw_commits_per_s"],
            f"MariaDB, many connections; mean of {_repeats(f['raw_commits_probes'])}",
        ),
        ("raw: same + one hot row updated", f["raw_hot_row_commits_per_s"], "commits/s serialised on one row"),
        ("raw: Redis XADD/s", f["raw_xadd_per_s"], "one per round trip"),
        ("raw: Redis XADD/s pipelined", f["raw_xadd_pipelined_per_s"], "100 per round trip"),
        *round_trip_rows(f.get("raw_round_trip_cpu_us")),
        ("", None, ""),
        ("API: accepted deposits/s at saturation", f["api_accepted_per_s"], mark("api_accepted_per_s")),
        (f"API: p50 ms at {f['api_offered_rate']:g} req/s", f["api_p50_ms_at_500"], "open loop"),
        (f"API: p95 ms at {f['api_offered_rate']:g} req/s", f["api_p95_ms_at_500"], ""),
        (f"API: p99 ms at {f['api_offered_rate']:g} req/s", f["api_p99_ms_at_500"], mark("api_p99_ms_at_500")),
        (
            "API: requests failed/timed out at that rate",
            f["api_failed_at_500"],
            f"of which refused 503 (overloaded): {report.fmt(f.get('api_refused_at_500'))}",
        ),
        (
            "API: load generator's lateness p99 ms at that rate",
            f.get("api_generator_lag_p99_ms_at_500"),
            "requests sent after their due time (part of the latency above)",
        ),
        *(
            (
                f"API: p99 ms at {pt['rate']:g} req/s",
                pt["p99_ms"],
                f"p50 {report.fmt(pt['p50_ms'])}; {report.fmt(pt['cpu_ms_per_deposit'])} ms CPU a completed deposit"
                + (f", {report.fmt(pt['switches_per_deposit'])} wakeups" if pt.get("switches_per_deposit") else "")
                + (f", {pt['failed']} failed" if pt["failed"] else ""),
            )
            for pt in f["api_curve"]
        ),
        (
            f"API: highest offered rate with p99 <= {P99_GOAL_MS:g} ms",
            f["api_best_rate_within_p99_goal"] or "none",
            "req/s, of the rates above, beside the worker",
        ),
        (
            "API: its CPU ms per accepted deposit",
            f["api_saturation_api_ms_per_deposit"],
            f"at saturation; all processes kept {_fmt_cores(f['api_saturation_cores_busy'])} of "
            f"{machine['cores']} cores busy",
        ),
        ("API alone: accepted deposits/s", f["api_alone_accepted_per_s"], "diagnostic: the worker stopped"),
        ("API alone: CPU ms per accepted deposit", f["api_alone_cpu_ms_per_deposit"], "all processes"),
        *_of_which(f["api_alone_cpu_ms_per_deposit_by_process"]),
        (
            "API alone: deposits/s the cores carry at full use",
            f["api_alone_full_use_per_s"],
            "cores / CPU per accepted deposit",
        ),
        (f"API alone: p99 ms at {f['api_offered_rate']:g} req/s", f["api_alone_p99_ms_at_500"], "diagnostic"),
        ("", None, ""),
        (
            "e2e: completed deposits/s, 1 worker",
            f["e2e_deposits_per_s_1_worker"],
            f"burst, 202 -> COMPLETED; median of {_repeats(f['e2e_deposits_repeats_1_worker'])}",
        ),
        ("e2e: same, best 5 s window", f["e2e_deposits_peak_5s_per_s_1_worker"], "diagnostic: without the tail"),
        (
            "e2e: CPU ms per completed deposit",
            f["e2e_cpu_ms_per_deposit"],
            "all processes and the generator; that burst",
        ),
        *_of_which(f["e2e_cpu_ms_per_deposit_by_process"]),
        ("e2e: cores busy during that burst", f["e2e_cores_busy"], f"of {machine['cores']}"),
        _switches_row("e2e: context switches a completed deposit", f.get("e2e_switches_per_deposit")),
        (
            "e2e: deposits/s the cores carry at full use",
            f["e2e_full_use_deposits_per_s"],
            "cores / CPU per deposit",
        ),
        ("e2e: deposit completion p50 ms (burst)", f["e2e_deposit_p50_ms"], "queueing included"),
        ("e2e: deposit completion p99 ms (burst)", f["e2e_deposit_p99_ms"], ""),
        (
            "e2e: deposit completion p50 ms (paced)",
            f["e2e_deposit_paced_p50_ms"],
            f"at {f['e2e_deposit_paced_rate']}/s",
        ),
        ("e2e: deposit completion p99 ms (paced)", f["e2e_deposit_paced_p99_ms"], ""),
        ("e2e: completed withdrawals/s, 1 worker", f["e2e_withdrawals_per_s"], "burst"),
        (
            "e2e: CPU ms per completed withdrawal",
            f["e2e_withdrawal_cpu_ms"],
            f"all processes kept {_fmt_cores(f['e2e_withdrawal_cores_busy'])} of {machine['cores']} cores busy",
        ),
        *_of_which(f.get("e2e_withdrawal_cpu_ms_by_process")),
        _switches_row("e2e: context switches a completed withdrawal", f.get("e2e_withdrawal_switches")),
        ("e2e: withdrawal completion p50 ms", f["e2e_withdrawal_p50_ms"], ""),
        ("e2e: withdrawal completion p99 ms", f["e2e_withdrawal_p99_ms"], ""),
        (
            "e2e: completed deposits/s, 2 workers",
            f["e2e_deposits_per_s_2_workers"],
            f"scaling; median of {_repeats(f['e2e_deposits_repeats_2_workers'])}",
        ),
        ("e2e: same, best 5 s window, 2 workers", f["e2e_deposits_peak_5s_per_s_2_workers"], "diagnostic"),
        ("e2e: deposit completion p99 ms, 2 workers", f["e2e_deposit_p99_ms_2_workers"], ""),
        ("e2e: best completed deposits/s", f["e2e_completed_per_s"], mark("e2e_completed_per_s")),
        ("e2e / raw commit limit, %", f["e2e_ratio_to_raw_pct"], mark("e2e_ratio_to_raw_pct")),
        ("", None, ""),
        ("SQL statements per deposit: API", f["sql_statements_per_deposit_api"], "one at a time; POST + callback"),
        ("SQL commits per deposit: API", f["sql_commits_per_deposit_api"], ""),
        ("SQL statements per deposit: worker", f["sql_statements_per_deposit_worker"], "push, credit, steps"),
        ("SQL commits per deposit: worker", f["sql_commits_per_deposit_worker"], ""),
        ("SQL statements per deposit: API, burst", f["sql_statements_per_deposit_api_burst"], "under load"),
        ("SQL commits per deposit: API, burst", f["sql_commits_per_deposit_api_burst"], ""),
        ("SQL statements per deposit: worker, burst", f["sql_statements_per_deposit_worker_burst"], "under load"),
        ("SQL commits per deposit: worker, burst", f["sql_commits_per_deposit_worker_burst"], ""),
        ("", None, ""),
        ("after the run: ledger balances", _yes(f["ledger_ok"]), "GET /admin/ledger/check"),
        ("after the run: audit chain verifies", _yes(f["audit_ok"]), "GET /admin/audit/verify"),
        ("after the run: every transaction terminal", _yes(f["all_terminal"]), ""),
    ]
    head = (
        f"PenPay benchmark: {machine['cores']} cores ({machine['cpu']}), {machine['memory_mb']:,} MB, "
        f"MariaDB {machine['mariadb']}, Redis {machine['redis']}, Python {machine['python']} "
        f"({machine.get('python_loop_mops', '?')} M loop iterations/s; "
        f"{machine.get('python_build', {}).get('build', 'build unknown')})"
    )
    return head + "\n" + report.table(rows)


def round_trip_rows(cost: object) -> list[tuple[str, object, str]]:
    """The probe's CPU per MariaDB round trip, back to back and after idle: what this machine charges for a wakeup."""
    if not isinstance(cost, dict):
        return []
    pause = f"after {report.fmt(cost['idle_pause_ms'])} ms idle"
    rows: list[tuple[str, object, str]] = [
        ("raw: CPU us a MariaDB round trip, client", cost["client_back_to_back"], "back to back (SELECT 1)"),
        (
            "raw: same, client, after idle",
            cost["client_after_idle"],
            f"{pause}: {report.fmt(cost['client_wake_factor'])}x",
        ),
    ]
    if cost.get("server_back_to_back") is not None:
        rows.append(
            (
                "raw: same, server",
                cost["server_back_to_back"],
                f"back to back; {pause}: {report.fmt(cost['server_after_idle'])}",
            )
        )
    return rows


def _of_which(by_process: object) -> list[tuple[str, object, str]]:
    """A table row per process whose CPU per unit is at least ``SHOWN_MS`` (all of them are in the JSON)."""
    if not isinstance(by_process, dict):
        return []
    return [
        (f"  of which {name}", ms, "")
        for name, ms in by_process.items()
        if isinstance(ms, int | float) and ms >= SHOWN_MS
    ]


def _switches_row(label: str, switches: object) -> tuple[str, object, str]:
    """A row of context switches a unit (``CpuMeter``'s ``switches_total_each``): the voluntary ones (a process
    going to sleep and being woken), the preempted ones beside them."""
    counts = switches if isinstance(switches, dict) else {}
    return (
        label,
        counts.get("voluntary"),
        f"all processes: sleep and wake; {report.fmt(counts.get('preempted'))} preempted",
    )


def _fmt_cores(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _repeats(values: object) -> str:
    return ", ".join(f"{v:,.1f}" for v in values) if isinstance(values, list) else "-"


def _yes(value: object) -> str:
    return "-" if value is None else ("yes" if value else "NO")


# ---------------------------------------------------------------------------------------------------- main
@contextlib.contextmanager
def _own_platform(settings: Settings, logs: Path, cfg: BenchConfig) -> Iterator[Platform]:
    os.environ.setdefault("PENPAY_E2E_LOGS", str(logs))
    from tests.e2e.platform import platform  # noqa: PLC0415 - the e2e tests' way of starting the real processes

    from penpay.adapters.db.engine import drop_database  # noqa: PLC0415

    url = make_url(settings.database_url).set(database=f"penpay_bench_{uuid.uuid4().hex[:8]}")
    database_url = url.render_as_string(hide_password=False)
    overrides = {
        "PENPAY_SANDBOX_CALLBACK_DELAY_MS": str(cfg.callback_delay_ms),
        "PENPAY_RATE_LIMIT_USER_PER_MIN": "1000000",
        "PENPAY_RATE_LIMIT_IP_PER_MIN": "100000000",
        # make run's own values (.env.example) unless BENCH_* says otherwise (quick mode: the e2e tests' short ones)
        "PENPAY_RECONCILE_AFTER_S": str(cfg.reconcile_after_s),
        "PENPAY_WORKER_CLAIM_IDLE_MS": str(cfg.claim_idle_ms),
        "PENPAY_WORKER_BLOCK_MS": "1000",
    }
    try:
        with platform(database_url, settings.redis_url, **overrides) as p:  # deletes its Redis keys after
            yield p
    finally:
        asyncio.run(drop_database(database_url))


def main() -> None:
    try:
        cfg = BenchConfig.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"make bench: {exc}\n")
        sys.exit(2)
    settings = Settings()
    started = datetime.now(UTC)
    logs = cfg.logs_dir / started.strftime("%Y%m%dT%H%M%SZ")
    logs.mkdir(parents=True, exist_ok=True)
    say(f"{'quick mode; ' if cfg.quick else ''}logs and raw profiles in {logs}")

    first = _probe(cfg, settings)
    machine = asyncio.run(report.machine(settings.redis_url, first["server_version"], ROOT))
    if (hint := report.faster_python(ROOT, sys.executable)) is not None:
        say(f"note: {hint}")

    out: dict[str, Any]
    if cfg.api_url:
        control = cfg.control_url or f"http://127.0.0.1:{settings.sandbox_http_port}"
        say(f"using the running platform at {cfg.api_url} (no scaling, profiles or statement counts)")
        out = asyncio.run(
            Bench(cfg, settings, api=cfg.api_url.rstrip("/"), control=control, platform=None, logs=logs).run()
        )
        mode = "external"
    else:
        say("starting sandbox, gateway, API and one worker (as make run does)")
        with _own_platform(settings, logs, cfg) as p:
            out = asyncio.run(Bench(cfg, p.settings, api=p.api, control=p.control, platform=p, logs=logs).run())
        mode = "started"

    say("raw limits again, after the run")
    raw = combined_probes([first, _probe(cfg, settings)])
    out["config"] = _config_dict(cfg)
    figs = figures(raw, out)
    targets = report.evaluate(figs)
    results = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "mode": mode,
        "quick": cfg.quick,
        "code": report.code(ROOT),
        "machine": machine,
        "figures": figs,
        "targets": targets,
        "raw": raw,
        "phases": out,
        "logs": str(logs),
    }
    path = report.write(results, cfg.results_dir)
    sys.stdout.write("\n" + render(figs, targets, machine) + "\n\n")
    say(f"results: {path}")
    checks_ok = bool(figs["ledger_ok"]) and bool(figs["all_terminal"]) and bool(figs["audit_ok"])
    sys.exit(0 if checks_ok else 1)


def _probe(cfg: BenchConfig, settings: Settings) -> dict[str, Any]:
    say(f"raw limits: {cfg.probe_connections} connections for {cfg.probe_seconds:g} s, then Redis")
    raw = asyncio.run(
        probe.measure(
            settings.database_url,
            settings.redis_url,
            connections=cfg.probe_connections,
            seconds=cfg.probe_seconds,
            redis_s=cfg.probe_redis_seconds,
        )
    ).as_dict()
    say(f"  {raw['commits_per_s']:,.0f} commits/s, {raw['xadd_per_s']:,.0f} XADD/s")
    return raw


RAW_RATES = ("commits_per_s", "hot_row_commits_per_s", "xadd_per_s", "xadd_pipelined_per_s")


def combined_probes(probes: list[dict[str, Any]]) -> dict[str, Any]:
    """The raw limits as the mean of the probes (before and after the run: the machine's limit moves within the
    hour), each probe kept; ``commits_probes`` lists each probe's commits/s."""
    out = dict(probes[0])
    for key in RAW_RATES:
        out[key] = round(statistics.fmean(float(p[key]) for p in probes), 1)
    out["commits_probes"] = [p["commits_per_s"] for p in probes]
    out["probes"] = probes
    return out


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    return {f.name: (str(v) if isinstance(v := getattr(cfg, f.name), Path) else v) for f in fields(cfg)}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
