"""What every benchmark of issue 8 shares: the machine, percentiles, targets, the JSON file.

Each run states where it ran (cores, CPU model, Python, Redis version) and when, in its JSON
and on screen, so figures from different machines are never compared by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from bench.cluster import ROOT

RESULTS_DIR = ROOT / "bench" / "results"


def machine(redis_url: str) -> dict[str, Any]:
    """The machine and the moment of a run."""
    with Redis.from_url(redis_url) as redis:
        info = redis.info("server")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "redis": str(info.get("redis_version", "?")),
        "platform": platform.platform(terse=True),
    }


def cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine(m: dict[str, Any]) -> str:
    return (f"{m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, "
            f"Redis {m['redis']}, {m['date']}")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between closest ranks; NaN when empty."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100
    low = math.floor(k)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (k - low)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    """n, median, p95, mean and max of a sample, rounded."""
    return {
        "n": len(values),
        "p50": _round(percentile(values, 50), digits),
        "p95": _round(percentile(values, 95), digits),
        "mean": _round(sum(values) / len(values), digits) if values else math.nan,
        "max": _round(max(values), digits) if values else math.nan,
    }


def _round(x: float, digits: int) -> float:
    return x if math.isnan(x) else round(x, digits)


@dataclass(frozen=True)
class Target:
    """One of issue 8's targets and whether this run met it."""

    figure: str
    value: float | None
    unit: str
    target: str
    met: bool | None  # None: not measured in this run
    note: str = ""

    def row(self) -> str:
        value = "-" if self.value is None else f"{self.value:g} {self.unit}".strip()
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        note = f"  ({self.note})" if self.note else ""
        return f"  {self.figure:52} {value:>12}  {self.target:>16}  {verdict}{note}"


def print_targets(targets: Iterable[Target]) -> None:
    print(f"  {'figure':52} {'value':>12}  {'target':>16}  verdict")
    for t in targets:
        print(t.row())


def write_results(
    name: str,
    out: Path,
    machine_info: dict[str, Any],
    config: dict[str, Any],
    results: dict[str, Any],
    targets: Sequence[Target],
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": name,
        "machine": machine_info,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.items()},
        "results": results,
        "targets": [asdict(t) for t in targets],
    }
    out.write_text(json.dumps(body, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}")


SETTLED = frozenset({"scheduled", "failed", "cancelled"})


def on_local_redis(
    main: Callable[[argparse.Namespace, str, dict[str, Any]], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
) -> int:
    """Run `main(args, redis_url, machine)` on a private redis-server the bench starts (and
    stops), the machine printed first: what every in-process benchmark's `run` does."""
    from worker.localredis import LocalRedis

    server = LocalRedis().start()
    try:
        info = machine(server.url)
        print(f"machine: {describe_machine(info)}")
        return asyncio.run(main(args, server.url, info))
    finally:
        server.cleanup()


async def all_settled(redis: Any, prefix: str) -> bool:
    """Every stay record (further locks' included) has its outcome: none queued, provisioning
    or waiting. Read from the records themselves (SCAN + MGET): a bench's few hundred stays."""
    from jobs.state import StayStore

    store = StayStore(redis, prefix)
    keys = [k async for k in redis.scan_iter(match=store.key("*"), count=1000)]
    for start in range(0, len(keys), 500):
        for raw in await redis.mget(keys[start:start + 500]):
            if raw is not None and json.loads(raw).get("state") not in SETTLED:
                return False
    return True
