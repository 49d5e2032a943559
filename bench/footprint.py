"""`python -m bench footprint`: what stays waiting on their locks cost in Redis and in a worker.

Workload (b): `--stays` stays (100,000 for the issue's figure; 10,000 by default to keep
`python -m bench` short) whose windows start 2 to 6 weeks ahead, over `--devices` locks. Each
stay's first step generates a PIN and creates the code; Seam answers `deferring_creation` (it
loads codes 72 h before starts_at), so the stay waits with one deferred check days ahead and
no job running. Seam's per-device create limit is off here (Seam's own 10 a minute would make
100,000 creates take hours); our budgets are set out of the way.

Worker processes (`codeprov worker`, the CLI) talk to the sandbox over loopback (bench.served,
in a thread of this process).
`--max-jobs` (CODEPROV_MAX_JOBS, 50 here) only makes the backlog go faster.

Figures: Redis `used_memory` after every stay waits, minus before the first was enqueued
(workers already up), per stay; a breakdown from MEMORY USAGE of sampled keys; each worker's
RSS sampled every `--sample` s while the stays go through and for `--idle` s after, and whether
it stays flat (growth from 10 % of the stays processed to the end under 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import psutil  # type: ignore[import-untyped]
from redis import Redis

from bench.cluster import CODEPROV, Served, start_workers, stop, wait_started, worker_env
from bench.common import (
    RESULTS_DIR,
    Target,
    describe_machine,
    machine,
    print_targets,
    write_results,
)
from bench.pipeline import gather_limited
from bench.served import ServedSandbox, serve_in_thread
from jobs.enqueue import enqueue_stay
from jobs.state import Phase, StayStore
from seam_sandbox import RateLimits, Sandbox, Scenario
from worker.localredis import LocalRedis
from worker.queue import connect, job_id
from worker.settings import Settings

RESULTS = RESULTS_DIR / "footprint.json"
QUEUE = "codeprov:queue"
INDEX = "codeprov:stays"
BYTES_TARGET = 1536
RSS_TARGET_MB = 120.0
FLAT_GROWTH = 0.10


@dataclass(frozen=True)
class Footprint:
    stays: int
    waiting_in_sample: str  # sampled stays waiting on deferring_creation, a check days ahead
    seconds: float
    redis_bytes_per_stay: float
    redis_used_before_mb: float
    redis_used_after_mb: float
    breakdown_bytes: dict[str, float]
    rss_mb: list[dict[str, Any]]  # per worker: start, at 10 %, max, end, growth, flat
    rss_samples: list[list[float]]  # [seconds, processed, rss MB of each worker], downsampled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=10_000,
                        help="waiting stays [10000; the issue's figure: 100000]")
    parser.add_argument("--devices", type=int, default=1000, help="locks [1000]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes [2]")
    parser.add_argument("--max-jobs", type=int, default=50, help="CODEPROV_MAX_JOBS [50]")
    parser.add_argument("--sample", type=float, default=0.5, help="RSS sampling period, s [0.5]")
    parser.add_argument("--idle", type=float, default=10.0, help="sampled after, s [10]")
    parser.add_argument("--seed", type=int, default=0, help="sandbox and dates seed [0]")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after, s [1800]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    server = LocalRedis().start()
    try:
        info = machine(server.url)
        print(f"machine: {describe_machine(info)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
            result = _measure(args, server.url, Path(tmp))
    finally:
        server.cleanup()
    print(_summary(result))
    targets = _targets(result)
    print()
    print_targets(targets)
    write_results("footprint", args.out, info, vars(args), asdict(result), targets)
    return 0


def _measure(args: argparse.Namespace, redis_url: str, directory: Path) -> Footprint:
    with Redis.from_url(redis_url) as redis:
        redis.flushdb()
    scenario = Scenario(device_count=args.devices, rate_limits=RateLimits(per_device=False))
    sandbox = Sandbox(scenario, seed=args.seed)
    with serve_in_thread(sandbox) as served:
        seam = Served(served.endpoint, sandbox.api_key, sandbox.device_ids)
        env = worker_env(redis_url, seam, rate_per_second=100_000, rate_burst=1000,
                         device_creates_per_minute=1e9, max_jobs=args.max_jobs,
                         log_format="json", log_level="info")
        processes = start_workers(args.workers, [CODEPROV, "worker"], env, directory)
        try:
            wait_started(processes, directory)
            procs = [psutil.Process(p.pid) for p in processes]
            time.sleep(1.0)  # start-up settles (cron registration, intake group)
            before = _used_memory(redis_url)
            start = time.monotonic()
            asyncio.run(_enqueue(Settings(redis_url=redis_url), served, args))
            samples = _sample_until_waiting(args, redis_url, procs, start)
            seconds = samples[-1][0]
            samples += _sample_idle(args, procs, start, args.stays)
            after = _used_memory(redis_url)
            breakdown = _breakdown(redis_url, args)
            waiting = asyncio.run(_verify_waiting(Settings(redis_url=redis_url), served, args))
        finally:
            stop(processes)
    return Footprint(
        stays=args.stays, waiting_in_sample=waiting, seconds=round(seconds, 1),
        redis_bytes_per_stay=round((after - before) / args.stays, 1),
        redis_used_before_mb=round(before / 2**20, 2), redis_used_after_mb=round(after / 2**20, 2),
        breakdown_bytes=breakdown, rss_mb=_rss_summary(samples, args.stays),
        rss_samples=_downsample(samples, 60),
    )


def _used_memory(redis_url: str) -> int:
    with Redis.from_url(redis_url) as redis:
        return int(redis.info("memory")["used_memory"])


async def _enqueue(settings: Settings, served: ServedSandbox, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    now = served.sandbox.clock.now()
    devices = served.sandbox.device_ids
    pool = await connect(settings)

    def call(i: int) -> Any:
        starts = now + timedelta(days=14 + rng.uniform(0, 28))
        ends = starts + timedelta(days=3)
        stay = {"booking_id": f"wait-{i:06}", "device_id": devices[i % len(devices)],
                "starts_at": starts.isoformat(), "ends_at": ends.isoformat()}

        async def go() -> None:
            result = await enqueue_stay(pool, stay, now=now)
            if result.result != "enqueued":
                raise RuntimeError(f"enqueue failed: {result}")
        return go

    try:
        await gather_limited([call(i) for i in range(args.stays)])
    finally:
        await pool.aclose()


def _sample_until_waiting(args: argparse.Namespace, redis_url: str,
                          procs: list[psutil.Process], start: float) -> list[list[float]]:
    """[seconds, stays processed, RSS MB per worker] until no first step is left to run."""
    samples: list[list[float]] = []
    tenth = max(1, args.stays // 10)
    with Redis.from_url(redis_url) as redis:
        while True:
            due = int(redis.zcount(QUEUE, "-inf", int(time.time() * 1000)))
            processed = int(redis.zcard(QUEUE)) - due
            if processed // tenth > (samples[-1][1] // tenth if samples else 0):
                print(f"  {time.monotonic() - start:6.1f} s: {processed} stays waiting, "
                      f"RSS {' / '.join(f'{r} MB' for r in _rss(procs))}", flush=True)
            samples.append([round(time.monotonic() - start, 2), processed, *_rss(procs)])
            if due == 0 and processed >= args.stays:
                return samples
            if time.monotonic() - start > args.timeout:
                raise RuntimeError(f"only {processed}/{args.stays} stays waiting after "
                                   f"{args.timeout:.0f} s")
            time.sleep(args.sample)


def _sample_idle(args: argparse.Namespace, procs: list[psutil.Process], start: float,
                 processed: int) -> list[list[float]]:
    samples = []
    end = time.monotonic() + args.idle
    while time.monotonic() < end:
        time.sleep(args.sample)
        samples.append([round(time.monotonic() - start, 2), processed, *_rss(procs)])
    return samples


def _rss(procs: list[psutil.Process]) -> list[float]:
    return [round(p.memory_info().rss / 2**20, 1) for p in procs]


SAMPLE = 100


def _sampled_ids(args: argparse.Namespace) -> list[str]:
    rng = random.Random(args.seed + 1)
    return [f"wait-{i:06}" for i in rng.sample(range(args.stays), min(SAMPLE, args.stays))]


async def _verify_waiting(settings: Settings, served: ServedSandbox,
                          args: argparse.Namespace) -> str:
    """How many sampled stays wait as intended: deferring_creation, next check a day+ ahead."""
    pool = await connect(settings)
    soon = served.sandbox.clock.now() + timedelta(days=1)
    ids = _sampled_ids(args)
    try:
        states = [await StayStore(pool).get(b) for b in ids]
    finally:
        await pool.aclose()
    ok = sum(1 for s in states if s is not None and s.state is Phase.WAITING
             and "deferring_creation" in s.mutations
             and s.next_check_at is not None and s.next_check_at > soon)
    return f"{ok}/{len(ids)}"


def _breakdown(redis_url: str, args: argparse.Namespace) -> dict[str, float]:
    """Bytes per stay by key kind, from MEMORY USAGE (sampled keys, whole sorted sets)."""
    ids = _sampled_ids(args)
    with Redis.from_url(redis_url) as redis:
        def mean_usage(keys: list[str]) -> float:
            sizes = [redis.memory_usage(k, samples=0) or 0 for k in keys]
            return round(sum(sizes) / len(sizes), 1)

        def per_member(key: str) -> float:
            used = float(redis.memory_usage(key, samples=0) or 0)
            return round(used / max(1, int(cast(int, redis.zcard(key)))), 1)

        return {
            "stay_record": mean_usage([f"codeprov:stay:{b}" for b in ids]),
            "arq_job": mean_usage([f"arq:job:{job_id(b, 1, prefix='codeprov')}" for b in ids]),
            "arq_queue_entry": per_member(QUEUE),
            "stays_index_entry": per_member(INDEX),
        }


def _rss_summary(samples: list[list[float]], total: int) -> list[dict[str, Any]]:
    workers = len(samples[0]) - 2
    out = []
    for w in range(workers):
        series = [(s[1], s[2 + w]) for s in samples]
        at_10 = next((rss for n, rss in series if n >= total * 0.1), series[0][1])
        end, peak = series[-1][1], max(rss for _, rss in series)
        growth = (end - at_10) / at_10 if at_10 else 0.0
        out.append({"start": series[0][1], "at_10pct": at_10, "max": peak, "end": end,
                    "growth": round(growth, 3), "flat": growth < FLAT_GROWTH})
    return out


def _downsample(samples: list[list[float]], n: int) -> list[list[float]]:
    step = max(1, len(samples) // n)
    kept = samples[::step]
    return kept if kept[-1] is samples[-1] else [*kept, samples[-1]]


def _summary(r: Footprint) -> str:
    rss = ", ".join(f"worker {i}: {w['start']} -> {w['at_10pct']} (10 %) -> {w['end']} MB "
                    f"(max {w['max']}, growth {w['growth']:.1%})" for i, w in enumerate(r.rss_mb))
    parts = ", ".join(f"{k} {v:g}" for k, v in r.breakdown_bytes.items())
    return (f"  {r.stays} stays waiting after {r.seconds} s (sample: {r.waiting_in_sample} "
            f"deferring_creation, next check > 1 day ahead)\n"
            f"  Redis: {r.redis_bytes_per_stay:g} B per waiting stay ({r.redis_used_before_mb} -> "
            f"{r.redis_used_after_mb} MB); by key: {parts}\n"
            f"  RSS: {rss}")


def _targets(r: Footprint) -> list[Target]:
    peak = max(w["max"] for w in r.rss_mb)
    flat = all(w["flat"] for w in r.rss_mb)
    growth = max(w["growth"] for w in r.rss_mb)
    return [
        Target("Redis per waiting stay", r.redis_bytes_per_stay, "B",
               f"<= {BYTES_TARGET} B", r.redis_bytes_per_stay <= BYTES_TARGET,
               f"{r.stays} stays"),
        Target("worker RSS (max) / flat", peak, "MB", f"<= {RSS_TARGET_MB:g} MB, flat",
               peak <= RSS_TARGET_MB and flat,
               f"growth after 10 %: {growth:.1%}, {'flat' if flat else 'NOT flat'}"),
    ]
