"""The raw limits of this machine, measured from Python: what PenPay's throughput is compared against.

- Durable ledger-style commits/s: ``connections`` asyncmy connections, autocommit off, each unit one transaction row
  plus two entry rows and one ``COMMIT`` (``innodb_flush_log_at_trx_commit`` as the server has it), into scratch
  tables of a scratch database that is dropped afterwards.
- The same with a hot row: each unit also updates one shared balance row (as every deposit updates ``deriv:agent``
  and ``audit_head``), so the row lock is held across the commit's log flush and commits serialise on it.
- Redis ``XADD``/s, one command per round trip from 32 concurrent callers, and pipelined 100 per round trip, on a
  private key deleted afterwards.
- What one MariaDB round trip (``SELECT 1``, one connection) costs in CPU, back to back and after 20 ms idle: the
  client's (this process) and, when the server runs on this machine, the server's (its threads' ``schedstat``). On
  some VMs a process woken from idle pays several times the CPU of one kept busy (docs/performance.md, rounds 16-18),
  and a paced load is made of such wakeups: this says how much this machine charges, so that the latency curve's
  CPU per deposit compares across machines.

``make bench`` runs it before and after the platform; ``python -m bench.probe`` (``make bench-probe``) runs it alone,
with the same defaults, against ``PENPAY_DATABASE_URL`` and ``PENPAY_REDIS_URL`` (the environment or ``.env``), and
prints the result as JSON: the raw limit beside an independent load run (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from bench import profiling

CONNECT_TIMEOUT_S = 5
REDIS_TIMEOUT_S = 5.0
IDLE_PAUSE_S = 0.02  # the pause before each "after idle" round trip: longer than a vCPU's halt-polling window
PAYLOAD = '{"amount_kes":100,"amount_usd":77,"deriv_loginid":"CR1000001","msisdn":"254712345678","v":1}' * 3


@dataclass(frozen=True, slots=True)
class ProbeResult:
    commits_per_s: float
    hot_row_commits_per_s: float
    xadd_per_s: float
    xadd_pipelined_per_s: float
    connections: int
    server_version: str
    flush_log_at_trx_commit: str
    binlog: str
    round_trip: RoundTripCost

    def as_dict(self) -> dict[str, Any]:
        return {
            "commits_per_s": round(self.commits_per_s, 1),
            "hot_row_commits_per_s": round(self.hot_row_commits_per_s, 1),
            "xadd_per_s": round(self.xadd_per_s, 1),
            "xadd_pipelined_per_s": round(self.xadd_pipelined_per_s, 1),
            "connections": self.connections,
            "server_version": self.server_version,
            "innodb_flush_log_at_trx_commit": self.flush_log_at_trx_commit,
            "log_bin": self.binlog,
            "round_trip_cpu_us": self.round_trip.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class RoundTripCost:
    """Microseconds of CPU per round trip; the server's are None when its process is not on this machine."""

    client_back_to_back: float
    client_after_idle: float
    server_back_to_back: float | None
    server_after_idle: float | None

    @property
    def wake_factor(self) -> float:
        """How many times a round trip after idle costs the client against one back to back."""
        return self.client_after_idle / self.client_back_to_back if self.client_back_to_back > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        def us(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "client_back_to_back": us(self.client_back_to_back),
            "client_after_idle": us(self.client_after_idle),
            "server_back_to_back": us(self.server_back_to_back),
            "server_after_idle": us(self.server_after_idle),
            "client_wake_factor": round(self.wake_factor, 2),
            "idle_pause_ms": IDLE_PAUSE_S * 1000,
        }


def _connect_args(database_url: str) -> dict[str, Any]:
    url = make_url(database_url)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "connect_timeout": CONNECT_TIMEOUT_S,
    }


async def _connect(args: dict[str, Any], db: str | None = None) -> Any:
    return await asyncmy.connect(**args, db=db, autocommit=False)


async def _scalar(conn: Any, sql: str) -> str:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        row = await cur.fetchone()
    return "" if row is None else str(row[-1])


async def _commit_loop(conn: Any, deadline: float, counter: list[int], *, hot: bool) -> None:
    async with conn.cursor() as cur:
        while time.perf_counter() < deadline:
            await cur.execute(
                "INSERT INTO probe_txn (ref, amount, created_at) VALUES (%s, %s, NOW(6))", (uuid.uuid4().hex, 100)
            )
            txn_id = cur.lastrowid
            await cur.execute(
                "INSERT INTO probe_entry (txn_id, account, amount) VALUES (%s, %s, %s), (%s, %s, %s)",
                (txn_id, "mpesa:collections", -100, txn_id, "clearing:user", 100),
            )
            if hot:
                await cur.execute("UPDATE probe_account SET balance = balance + 100 WHERE code = 'deriv:agent'")
            await conn.commit()
            counter[0] += 1


async def _commits(args: dict[str, Any], db: str, connections: int, seconds: float, *, hot: bool) -> float:
    conns = [await _connect(args, db) for _ in range(connections)]
    counter = [0]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(_commit_loop(c, start + seconds, counter, hot=hot) for c in conns))
        return counter[0] / (time.perf_counter() - start)
    finally:
        for c in conns:
            c.close()


async def mariadb_limits(database_url: str, *, connections: int, seconds: float) -> tuple[float, float, str, str, str]:
    """(commits/s, hot-row commits/s, server version, innodb_flush_log_at_trx_commit, log_bin)."""
    args = _connect_args(database_url)
    db = f"penpay_bench_probe_{uuid.uuid4().hex[:8]}"
    admin = await _connect(args)
    try:
        version = await _scalar(admin, "SELECT VERSION()")
        flush = await _scalar(admin, "SHOW VARIABLES LIKE 'innodb_flush_log_at_trx_commit'")
        binlog = await _scalar(admin, "SHOW VARIABLES LIKE 'log_bin'")
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{db}`")
            await cur.execute(f"USE `{db}`")
            await cur.execute(
                "CREATE TABLE probe_txn (id BIGINT AUTO_INCREMENT PRIMARY KEY, ref CHAR(32) NOT NULL UNIQUE, "
                "amount BIGINT NOT NULL, created_at DATETIME(6) NOT NULL) ENGINE=InnoDB"
            )
            await cur.execute(
                "CREATE TABLE probe_entry (id BIGINT AUTO_INCREMENT PRIMARY KEY, txn_id BIGINT NOT NULL, "
                "account VARCHAR(64) NOT NULL, amount BIGINT NOT NULL, KEY (txn_id), KEY (account)) ENGINE=InnoDB"
            )
            await cur.execute(
                "CREATE TABLE probe_account (code VARCHAR(64) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"
            )
            await cur.execute("INSERT INTO probe_account VALUES ('deriv:agent', 0)")
        await admin.commit()
        plain = await _commits(args, db, connections, seconds, hot=False)
        hot = await _commits(args, db, connections, max(0.5, seconds / 2), hot=True)
        return plain, hot, version, flush, binlog
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()


def local_server_pid(database_url: str) -> int | None:
    """The database server's process, when ``database_url`` names this machine and it runs here (``profiling``)."""
    if make_url(database_url).host not in (None, *profiling.LOCAL_HOSTS):
        return None
    found = profiling.server_pids()
    return found.get("mariadbd") or found.get("mysqld")


def _server_cpu_ns(pid: int | None) -> int | None:
    """Nanoseconds on CPU of every thread of ``pid`` (``/proc/<pid>/task/*/schedstat``), or None if unreadable."""
    if pid is None:
        return None
    total = 0
    try:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError):  # a thread that ended between the listing and the read
                total += int(stat.read_text().split()[0])
    except OSError:
        return None
    return total


async def round_trip_cost(
    database_url: str, *, back_to_back: int = 400, after_idle: int = 50, pause_s: float = IDLE_PAUSE_S
) -> RoundTripCost:
    """The CPU of one ``SELECT 1`` round trip, ``back_to_back`` of them in a row and then ``after_idle`` each after
    ``pause_s`` of sleep (only the round trips are counted, not the pauses)."""
    conn = await _connect(_connect_args(database_url))
    server = local_server_pid(database_url)
    try:
        async with conn.cursor() as cur:

            async def timed(count: int, pause: float) -> tuple[float, float | None]:
                """Mean microseconds of CPU a round trip: the client's, each round trip alone; the server's, over
                the whole run (its threads' total before and after, read outside the client's windows)."""
                before = _server_cpu_ns(server)
                client = 0.0
                for _ in range(count):
                    if pause:
                        await asyncio.sleep(pause)
                    started = time.process_time()
                    await cur.execute("SELECT 1")
                    await cur.fetchall()
                    client += time.process_time() - started
                after = _server_cpu_ns(server)
                used = None if before is None or after is None else (after - before) / 1000 / count
                return 1e6 * client / count, used

            await timed(1, 0.0)  # the connection's first statement pays for its own set-up
            busy_client, busy_server = await timed(back_to_back, 0.0)
            idle_client, idle_server = await timed(after_idle, pause_s)
    finally:
        conn.close()
    return RoundTripCost(
        client_back_to_back=busy_client,
        client_after_idle=idle_client,
        server_back_to_back=busy_server,
        server_after_idle=idle_server,
    )


async def redis_limits(redis_url: str, *, seconds: float, callers: int = 32) -> tuple[float, float]:
    """(XADD/s one per round trip, XADD/s pipelined 100 per round trip)."""
    client = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    key = f"penpay-bench-probe-{uuid.uuid4().hex[:8]}:stream"
    fields = {"event_id": "1", "type": "deposit.requested", "transaction_id": "01J" + "0" * 23, "payload": PAYLOAD}
    try:
        counter = [0]

        async def single(deadline: float) -> None:
            while time.perf_counter() < deadline:
                await client.xadd(key, fields, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
                counter[0] += 1

        start = time.perf_counter()
        await asyncio.gather(*(single(start + seconds) for _ in range(callers)))
        one_by_one = counter[0] / (time.perf_counter() - start)

        counter[0] = 0

        async def piped(deadline: float) -> None:
            while time.perf_counter() < deadline:
                pipe = client.pipeline(transaction=False)
                for _ in range(100):
                    pipe.xadd(key, fields, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
                counter[0] += 100

        start = time.perf_counter()
        await asyncio.gather(*(piped(start + seconds) for _ in range(4)))
        pipelined = counter[0] / (time.perf_counter() - start)
        return one_by_one, pipelined
    finally:
        await client.delete(key)
        await client.aclose()


async def measure(
    database_url: str, redis_url: str, *, connections: int, seconds: float, redis_s: float
) -> ProbeResult:
    plain, hot, version, flush, binlog = await mariadb_limits(database_url, connections=connections, seconds=seconds)
    one, piped = await redis_limits(redis_url, seconds=redis_s)
    round_trip = await round_trip_cost(database_url)
    return ProbeResult(
        commits_per_s=plain,
        hot_row_commits_per_s=hot,
        xadd_per_s=one,
        xadd_pipelined_per_s=piped,
        connections=connections,
        server_version=version,
        flush_log_at_trx_commit=flush,
        binlog=binlog,
        round_trip=round_trip,
    )


def main(argv: list[str] | None = None) -> int:
    from bench.config import BenchConfig  # noqa: PLC0415 - the bench's defaults, so this is the same probe
    from penpay.settings import Settings  # noqa: PLC0415

    defaults = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.probe", description="the raw limits of this machine's MariaDB and Redis, from Python"
    )
    parser.add_argument("--seconds", type=float, default=defaults.probe_seconds, help="the commits' measurement")
    parser.add_argument("--connections", type=int, default=defaults.probe_connections, help="MariaDB connections")
    parser.add_argument("--redis-seconds", type=float, default=defaults.probe_redis_seconds, help="each XADD measure")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.redis_seconds <= 0 or args.connections < 1:
        parser.error("--seconds and --redis-seconds must be positive and --connections at least 1")
    settings = Settings()
    try:
        result = asyncio.run(
            measure(
                settings.database_url,
                settings.redis_url,
                connections=args.connections,
                seconds=args.seconds,
                redis_s=args.redis_seconds,
            )
        )
    except (OSError, asyncmy.errors.Error, aioredis.RedisError) as exc:
        sys.stderr.write(f"bench.probe: cannot measure ({type(exc).__name__}: {exc})\n")
        return 1
    sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
