"""The benchmark's knobs, all from ``BENCH_*`` environment variables, with a quick mode for the smoke test.

``BENCH_QUICK=1`` shrinks every phase to a second or two and a few dozen transactions: it proves the harness runs
end to end and writes every figure, not that the figures mean anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A ``BENCH_*`` variable that cannot be used; its message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    quick: bool = False
    api_url: str = ""  # BENCH_API_URL: use a running platform instead of starting one
    control_url: str = ""  # BENCH_CONTROL_URL: its sandbox control API (default: from the PENPAY_* settings)
    results_dir: Path = ROOT / "bench" / "results"
    logs_dir: Path = Path("/tmp/penpay-bench")  # noqa: S108 - process logs and raw profiles, not committed

    callback_delay_ms: int = 0  # the sandbox's STK/B2C callback delay (issue 6: provider delays 0)
    claim_idle_ms: int = 60_000  # make run's PENPAY_WORKER_CLAIM_IDLE_MS: how long a failed message waits
    reconcile_after_s: int = 30  # make run's PENPAY_RECONCILE_AFTER_S

    # raw limit probe
    probe_seconds: float = 8.0
    probe_connections: int = 32
    probe_redis_seconds: float = 3.0

    # API
    users: int = 2000
    saturation_seconds: float = 10.0
    saturation_concurrency: int = 64
    latency_rate: float = 500.0
    latency_seconds: float = 10.0
    request_timeout_s: float = 5.0  # open loop: a request not answered this long after it was due counts as failed
    max_connections: int = 256
    # the API's latency beside the worker at lower offered rates, each from an idle platform (req/s, comma-separated)
    curve_rates: str = "100,200,300,400"
    curve_seconds: float = 8.0

    # end to end
    e2e_deposits: int = 1000
    e2e_repeats: int = 3  # each deposit burst (1 and 2 workers) this many times; the figure is the median burst
    e2e_withdrawals: int = 400
    e2e_concurrency: int = 64
    paced_seconds: float = 10.0
    drain_timeout_s: float = 300.0

    # profiles and statement counts
    profile: bool = True
    profile_seconds: float = 10.0
    count_deposits: int = 100

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BenchConfig:
        env = dict(os.environ if env is None else env)
        quick = env.get("BENCH_QUICK", "").strip().lower() in ("1", "true", "yes")
        base = cls.quick_defaults() if quick else cls()
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"BENCH_{f.name.upper()}")
            if raw is None or raw == "" or f.name == "quick":
                continue
            current = getattr(base, f.name)
            try:
                if isinstance(current, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes")
                elif isinstance(current, int):
                    values[f.name] = int(raw)
                elif isinstance(current, float):
                    values[f.name] = float(raw)
                elif isinstance(current, Path):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                kind = "an integer" if isinstance(current, int) else "a number"
                raise ConfigError(f"BENCH_{f.name.upper()} must be {kind}, not {raw!r}") from None
        cfg = base.replace(**values)
        cfg.curve()  # refuses a malformed BENCH_CURVE_RATES now, not minutes into the run
        return cfg

    def curve(self) -> tuple[float, ...]:
        """The latency curve's offered rates, in the order given."""
        try:
            rates = tuple(float(part) for part in self.curve_rates.split(",") if part.strip())
        except ValueError:
            rates = ()
        if not rates or any(rate <= 0 for rate in rates):
            raise ConfigError(
                f"BENCH_CURVE_RATES must be offered rates in req/s such as 100,200,300, not {self.curve_rates!r}"
            )
        return rates

    @classmethod
    def quick_defaults(cls) -> BenchConfig:
        return cls(
            quick=True,
            claim_idle_ms=2_000,
            reconcile_after_s=2,
            probe_seconds=1.0,
            probe_connections=8,
            probe_redis_seconds=0.5,
            users=50,
            saturation_seconds=1.5,
            saturation_concurrency=8,
            latency_rate=50.0,
            latency_seconds=1.0,
            curve_rates="20",
            curve_seconds=1.0,
            e2e_deposits=20,
            e2e_repeats=1,
            e2e_withdrawals=6,
            e2e_concurrency=8,
            paced_seconds=1.0,
            drain_timeout_s=120.0,
            profile_seconds=1.0,
            count_deposits=5,
        )

    def replace(self, **values: object) -> BenchConfig:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(values)
        return BenchConfig(**current)
