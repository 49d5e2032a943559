"""`python -m bench overhead`: what codeprov costs on top of arq, with an instant Seam.

Workload (c): the sandbox programs codes instantly (latency 0) and limits nothing; our budgets
are set out of the way. One worker process at a time, `codeprov worker` as operators run it, on
a flushed private Redis, the sandbox served on loopback from a thread of this process
(bench.served), for each `--queue-polls` value (CODEPROV_QUEUE_POLL, arq's poll_delay: how
often an idle worker looks for due jobs; `default` is the setting's default, 0.5 s is arq's).

- Throughput: `--stays` stays enqueued, then one `codeprov worker` started; codes per second
  from its first to its last outcome (the results stream). Each code here is one job: generate,
  create, the answer says scheduled.
- Baseline: `--noops` no-op jobs, then one `python -m bench.noop_worker` (the same arq
  settings, a step function that does nothing); jobs per second the same way (queue length).
  The ratio codes/s / no-op jobs/s is the share of arq's ceiling we keep.
- Second baseline: `python -m bench.http_floor`, a code's two Seam calls (generate_code, create)
  on httpx alone, `--stays` pairs. A worker that did nothing but arq's job handling and those
  two calls would reach 1 / (1/no-op + 1/pairs) codes/s: the ceiling; we report our share.
- Idle cost: the idle worker's CPU and the Redis commands per second it causes.
- Enqueue to first Seam request on the idle worker: `--trials` times, one stay enqueued with the
  Python API; the time until the sandbox sees its generate_code arrive (p50, p95).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    spread,
    write_results,
)
from bench.pipeline import gather_limited
from bench.served import ServedSandbox, serve_in_thread
from jobs.enqueue import enqueue_stay
from seam_sandbox import DeviceDefaults, Latency, RateLimits, Sandbox, Scenario
from worker.localredis import LocalRedis
from worker.queue import STEP_FUNCTION, connect
from worker.settings import Settings

RESULTS = RESULTS_DIR / "overhead.json"
GENERATE = "/access_codes/generate_code"
RATIO_TARGET = 0.5
FIRST_REQUEST_TARGET_MS = 25.0


@dataclass(frozen=True)
class Variant:
    queue_poll: float
    codes_per_s: float
    codeprov_cpu: float  # the worker's CPU over the run, in cores
    noop_jobs_per_s: float
    noop_cpu: float
    ratio: float
    http_pairs_per_s: float  # generate_code + create on httpx alone (bench.http_floor)
    http_cpu: float
    ceiling_codes_per_s: float  # 1 / (1/no-op + 1/pairs): arq's job handling + the two calls
    ceiling_ratio: float
    idle_cpu: float
    idle_redis_commands_per_s: float
    first_request_ms: dict[str, float | int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=600, help="stays per throughput run [600]")
    parser.add_argument("--noops", type=int, default=5000, help="no-op jobs per run [5000]")
    parser.add_argument("--devices", type=int, default=200, help="sandbox locks [200]")
    parser.add_argument("--queue-polls", default="default,0.05",
                        help="CODEPROV_QUEUE_POLL values to compare, s, comma-separated; "
                             "`default`: the setting's default [default,0.05]")
    parser.add_argument("--trials", type=int, default=20, help="first-request trials [20]")
    parser.add_argument("--idle", type=float, default=5.0, help="idle measurement, s [5]")
    parser.add_argument("--seed", type=int, default=0, help="sandbox and trial seed [0]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    server = LocalRedis().start()
    try:
        info = machine(server.url)
        print(f"machine: {describe_machine(info)}", flush=True)
        variants = []
        for delay in _polls(args.queue_polls):
            variant = _variant(args, server.url, delay)
            print(_row(variant), flush=True)
            variants.append(variant)
    finally:
        server.cleanup()
    targets = _targets(variants)
    print()
    print_targets(targets)
    write_results("overhead", args.out, info, vars(args),
                  {"variants": [asdict(v) for v in variants]}, targets)
    return 0


def _polls(spec: str) -> list[float]:
    default = Settings.model_fields["queue_poll"].default
    return [float(default) if p == "default" else float(p) for p in spec.split(",")]


def _variant(args: argparse.Namespace, redis_url: str, delay: float) -> Variant:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        directory = Path(tmp)
        _flush(redis_url)
        sandbox = Sandbox(_scenario(args), seed=args.seed)
        with serve_in_thread(sandbox) as served:
            env = _env(redis_url, served, delay)
            codes_per_s, cpu, idle_cpu, idle_cmds, first = _codeprov(args, env, served,
                                                                     directory)
            pairs_per_s, http_cpu = _http_floor(args, env, served)
        _flush(redis_url)
        noops_per_s, noop_cpu = _noop(args, env, redis_url, directory)
    ceiling = 1 / (1 / noops_per_s + 1 / pairs_per_s)
    return Variant(
        queue_poll=delay, codes_per_s=round(codes_per_s, 1), codeprov_cpu=round(cpu, 2),
        noop_jobs_per_s=round(noops_per_s, 1), noop_cpu=round(noop_cpu, 2),
        ratio=round(codes_per_s / noops_per_s, 3),
        http_pairs_per_s=round(pairs_per_s, 1), http_cpu=round(http_cpu, 2),
        ceiling_codes_per_s=round(ceiling, 1), ceiling_ratio=round(codes_per_s / ceiling, 3),
        idle_cpu=round(idle_cpu, 3),
        idle_redis_commands_per_s=round(idle_cmds, 1),
        first_request_ms=spread([x * 1000 for x in first], 1),
    )


def _scenario(args: argparse.Namespace) -> Scenario:
    instant = DeviceDefaults(latency=Latency.fixed(0))
    return Scenario(device_count=args.devices, device_defaults=instant,
                    rate_limits=RateLimits(per_device=False))


def _env(redis_url: str, served: ServedSandbox, queue_poll: float) -> dict[str, str]:
    seam = Served(served.endpoint, served.sandbox.api_key, served.sandbox.device_ids)
    return worker_env(redis_url, seam, rate_per_second=100_000, rate_burst=1000,
                      device_creates_per_minute=1e9, queue_poll=queue_poll,
                      log_format="json", log_level="info")


def _flush(redis_url: str) -> None:
    with Redis.from_url(redis_url) as redis:
        redis.flushdb()


COMMANDS = {"codeprov": [CODEPROV, "worker"], "noop": [sys.executable, "-m", "bench.noop_worker"]}


@contextmanager
def _worker(kind: str, env: dict[str, str], directory: Path,
            wait: bool = True) -> Iterator[psutil.Process]:
    (process,) = start_workers(1, COMMANDS[kind], env, directory)
    try:
        if wait:
            wait_started([process], directory)
        yield psutil.Process(process.pid)
    finally:
        stop([process])


def _codeprov(args: argparse.Namespace, env: dict[str, str], served: ServedSandbox,
              directory: Path) -> tuple[float, float, float, float, list[float]]:
    settings = Settings(redis_url=env["REDIS_URL"])
    asyncio.run(_enqueue(settings, served, args.stays, "tp"))
    with _worker("codeprov", env, directory, wait=False) as proc:
        codes_per_s, cpu = _rate(proc, env["REDIS_URL"], args.stays, _results_len)
        idle_cpu, idle_cmds = _idle(proc, env["REDIS_URL"], args.idle)
        first = asyncio.run(_first_requests(settings, served, args.trials, args.seed))
    return codes_per_s, cpu, idle_cpu, idle_cmds, first


def _noop(args: argparse.Namespace, env: dict[str, str], redis_url: str,
          directory: Path) -> tuple[float, float]:
    asyncio.run(_enqueue_noops(Settings(redis_url=redis_url), args.noops))
    with _worker("noop", env, directory, wait=False) as proc:
        return _rate(proc, redis_url, args.noops, _noops_done(args.noops))


def _http_floor(args: argparse.Namespace, env: dict[str, str],
                served: ServedSandbox) -> tuple[float, float]:
    command = [sys.executable, "-m", "bench.http_floor", str(args.stays),
               *served.sandbox.device_ids]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.http_floor failed: {done.stderr[-2000:]}")
    found = json.loads(done.stdout)
    return float(found["pairs_per_s"]), float(found["cpu"])


def _results_len(redis: Redis) -> int:
    return int(cast(int, redis.xlen("codeprov:results")))


def _noops_done(total: int) -> Any:
    def done(redis: Redis) -> int:
        return total - int(cast(int, redis.zcard("codeprov:queue")))
    return done


def _rate(proc: psutil.Process, redis_url: str, total: int, done: Any,
          timeout: float = 300) -> tuple[float, float]:
    """Completions per second from the first to the last; the process's CPU meanwhile."""
    first_at = first_cpu = None
    deadline = time.monotonic() + timeout
    with Redis.from_url(redis_url) as redis:
        while (n := done(redis)) < total:
            if first_at is None and n > 0:
                first_at, first_n, first_cpu = time.monotonic(), n, _cpu(proc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n}/{total} jobs done in {timeout:.0f} s")
            time.sleep(0.005)
    end, end_cpu = time.monotonic(), _cpu(proc)
    if first_at is None or first_cpu is None:
        raise RuntimeError("every job finished between two looks: raise the job count")
    return (total - first_n) / (end - first_at), (end_cpu - first_cpu) / (end - first_at)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _idle(proc: psutil.Process, redis_url: str, seconds: float) -> tuple[float, float]:
    """The idle worker's CPU (cores) and the Redis commands per second while it idles."""
    time.sleep(1.0)  # the last job's tail
    with Redis.from_url(redis_url) as redis:
        c0, r0, t0 = _cpu(proc), _commands(redis), time.monotonic()
        time.sleep(seconds)
        c1, r1, t1 = _cpu(proc), _commands(redis), time.monotonic()
    return (c1 - c0) / (t1 - t0), (r1 - r0 - 2) / (t1 - t0)  # our own two INFO calls


def _commands(redis: Redis) -> int:
    info = cast(dict[str, Any], redis.info("stats"))
    return int(info["total_commands_processed"])


async def _enqueue(settings: Settings, served: ServedSandbox, n: int, prefix: str) -> None:
    pool = await connect(settings)
    try:
        now = served.sandbox.clock.now()
        stays = _stays(served, n, prefix)

        def call(stay: dict[str, str]) -> Any:
            return lambda: enqueue_stay(pool, stay, now=now)

        await gather_limited([call(s) for s in stays])
    finally:
        await pool.aclose()


def _stays(served: ServedSandbox, n: int, prefix: str) -> list[dict[str, str]]:
    starts = served.sandbox.clock.now() + timedelta(days=2)  # in the 72 h lead, not "urgent"
    devices = served.sandbox.device_ids
    return [{"booking_id": f"{prefix}-{i:06}", "device_id": devices[i % len(devices)],
             "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=2)).isoformat()}
            for i in range(n)]


async def _enqueue_noops(settings: Settings, n: int) -> None:
    pool = await connect(settings)
    try:
        def call(i: int) -> Any:
            return lambda: pool.enqueue_job(STEP_FUNCTION, _job_id=f"noop:{i}",
                                            booking_id=f"noop-{i}", seq=0)

        await gather_limited([call(i) for i in range(n)])
    finally:
        await pool.aclose()


async def _first_requests(settings: Settings, served: ServedSandbox, trials: int,
                          seed: int) -> list[float]:
    """Enqueue one stay at a time on the idle worker; seconds until its generate_code arrives."""
    rng = random.Random(seed)
    pool = await connect(settings)
    took: list[float] = []
    try:
        base = int(await pool.xlen("codeprov:results"))
        for stay in _stays(served, trials, "first"):
            # A random phase against the worker's poll loop, as real arrivals have.
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            start = time.monotonic()
            await enqueue_stay(pool, stay, now=served.sandbox.clock.now())
            arrived = await _arrival(served, start)
            took.append(arrived - start)
            await _until_final(pool, base + len(took))
    finally:
        await pool.aclose()
    return took


async def _arrival(served: ServedSandbox, start: float, timeout: float = 10) -> float:
    while time.monotonic() - start < timeout:
        at = served.arrivals.first_after(start, GENERATE)
        if at is not None:
            return at
        await asyncio.sleep(0.0005)
    raise RuntimeError("no generate_code reached the sandbox within 10 s")


async def _until_final(pool: Any, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while int(await pool.xlen("codeprov:results")) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("a stay of the first-request trials did not finish")
        await asyncio.sleep(0.01)


def _row(v: Variant) -> str:
    f = v.first_request_ms
    return (f"  queue_poll {v.queue_poll:<5} codeprov {v.codes_per_s:7.1f} codes/s "
            f"({v.codeprov_cpu:.2f} CPU)  arq no-op {v.noop_jobs_per_s:7.1f} jobs/s "
            f"({v.noop_cpu:.2f} CPU)  ratio {v.ratio:.3f}  httpx alone {v.http_pairs_per_s:.1f} "
            f"pairs/s ({v.http_cpu:.2f} CPU)  ceiling {v.ceiling_codes_per_s:.1f} codes/s, "
            f"share {v.ceiling_ratio:.2f}  first request p50 {f['p50']} ms "
            f"p95 {f['p95']} ms  idle {v.idle_cpu:.3f} CPU, "
            f"{v.idle_redis_commands_per_s:.0f} Redis cmd/s")


def _targets(variants: list[Variant]) -> list[Target]:
    shipped = variants[0]  # the first --queue-polls value: the default unless told otherwise
    others = variants[1:]
    note = "; ".join([f"share of the arq + httpx ceiling {shipped.ceiling_ratio:g} "
                      f"({shipped.ceiling_codes_per_s:g} codes/s)"]
                     + [f"queue_poll {v.queue_poll}: {v.ratio:g}" for v in others])
    first = float(shipped.first_request_ms["p50"])
    first_note = "; ".join(f"queue_poll {v.queue_poll}: {v.first_request_ms['p50']} ms"
                           for v in others)
    return [
        Target(f"codes/s per worker / arq no-op jobs/s (poll {shipped.queue_poll:g} s)",
               shipped.ratio, "", f">= {RATIO_TARGET}", shipped.ratio >= RATIO_TARGET, note),
        Target(f"enqueue to first Seam request p50 (poll {shipped.queue_poll:g} s)", first, "ms",
               f"<= {FIRST_REQUEST_TARGET_MS:g} ms", first <= FIRST_REQUEST_TARGET_MS,
               first_note),
    ]

