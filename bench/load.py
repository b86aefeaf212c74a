"""Load shapes: closed-loop saturation and an open-loop constant-rate schedule, both on :class:`bench.http.HttpPool`.

Open loop means arrivals do not wait for answers: request ``i`` is due at ``t0 + i / rate`` whatever happened to the
ones before it, and its latency is measured from that due time, not from when it actually left. A stalled server
therefore shows up in the latency (no coordinated omission); if the generator itself falls behind, ``lag_p99_ms``
says so.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.http import Answer, HttpError, HttpPool

MakeRequest = Callable[[int], bytes]


@dataclass(slots=True)
class LoadResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)  # accepted (2xx) requests only
    lags_s: list[float] = field(default_factory=list)  # open loop: how late the generator sent each request
    created_ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    generator_cpu_s: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "elapsed_s": round(self.elapsed_s, 3),
            "accepted_per_s": round(self.accepted_per_s, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors.most_common(5)),
            "latency_ms": percentiles_ms(self.latencies_s),
            "lag_p99_ms": percentiles_ms(self.lags_s)["p99"] if self.lags_s else 0.0,
            "generator_cpu_s": round(self.generator_cpu_s, 2),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles_ms(values_s: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_s, 50) * 1000, 2),
        "p95": round(percentile(values_s, 95) * 1000, 2),
        "p99": round(percentile(values_s, 99) * 1000, 2),
        "max": round(max(values_s, default=0.0) * 1000, 2),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one(
    pool: HttpPool, request: bytes, due: float, result: LoadResult, *, keep_ids: bool, timeout_s: float
) -> None:
    """One request; a request not answered ``timeout_s`` after it was due (waiting for a free connection
    included) counts as a failure, as it would for a client that gives up."""
    try:
        async with asyncio.timeout(max(0.001, due + timeout_s - time.perf_counter())):
            answer: Answer = await pool.send(request)
    except TimeoutError:
        result.errors[f"no answer within {timeout_s:g} s of being due"] += 1
        return
    except HttpError as exc:
        result.errors[str(exc)[:120]] += 1
        return
    done = time.perf_counter()
    result.statuses[answer.status] += 1
    if 200 <= answer.status < 300:
        result.latencies_s.append(done - due)
        if keep_ids:
            result.created_ids.append(str(json.loads(answer.body)["id"]))
    elif len(result.errors) < 50:
        result.errors[f"HTTP {answer.status}: {answer.body[:100]!r}"] += 1


async def closed_loop(
    pool: HttpPool,
    make: MakeRequest,
    *,
    concurrency: int,
    duration_s: float = float("inf"),
    total: int | None = None,
    keep_ids: bool = True,
    timeout_s: float = 30.0,
) -> LoadResult:
    """``concurrency`` clients, each sending its next request as soon as the last one is answered, for
    ``duration_s`` or until ``total`` requests were sent: the server's throughput at saturation."""
    if total is None and duration_s == float("inf"):
        raise ValueError("give a duration or a total")
    result = LoadResult()
    counter = iter(range(1 << 62))
    cpu0 = _cpu_s()
    start = time.perf_counter()
    deadline = start + duration_s

    async def client() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if total is not None and i >= total:
                return
            result.sent += 1
            await _one(pool, make(i), time.perf_counter(), result, keep_ids=keep_ids, timeout_s=timeout_s)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    result.generator_cpu_s = _cpu_s() - cpu0
    return result


async def open_loop(
    pool: HttpPool,
    make: MakeRequest,
    *,
    rate: float,
    duration_s: float,
    keep_ids: bool = True,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Requests due at a constant ``rate`` for ``duration_s``, sent whether or not earlier ones were answered; waits
    for the last answers before returning."""
    result = LoadResult()
    total = max(1, round(rate * duration_s))
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = _cpu_s()
    start = time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i * interval <= now:
            due = start + i * interval
            result.lags_s.append(now - due)
            result.sent += 1
            task = asyncio.create_task(_one(pool, make(i), due, result, keep_ids=keep_ids, timeout_s=timeout_s))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
    if tasks:
        await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    result.generator_cpu_s = _cpu_s() - cpu0
    return result
