"""`python -m bench pipeline`: a backlog of stays on the sandbox, codeprov beside a naive poller.

Workload (a): `--stays` stays (2,000) over `--devices` locks (200), all enqueued before the
workers start, fixed seed. Every lock programs a code in a lognormal time (median 5 s, sigma
0.5: Seam's typical few seconds, with a tail) on the sandbox clock running at real speed (1x),
and Seam's per-device limit of 10 creates a minute applies, in the sandbox and in our limiter.
The workspace budget (CODEPROV_RATE_PER_SECOND) is set out of the way (`--rate`): the sandbox's
default scenario has none, and the issue is what Seam's own limits allow.

In-process, like tests/harness.py: real Redis, `--workers` real arq workers built by
`make_worker` with the production settings (CODEPROV_MAX_JOBS 10, CODEPROV_QUEUE_POLL's
default) unless flags say otherwise, the sandbox over ASGITransport, and the worker's clock =
the sandbox's clock. Every Seam request is
logged on its way (bench.seamlog), so calls are counted per stay.

- codeprov: deferred checks timed by each lock's learned programming time (jobs/observe.py).
- naive: `bench.naive`, one job per stay polling `get` every `--naive-interval` s (1 s) in the
  job, with `--naive-max-jobs` slots (200) so slots, not Seam, never bound it.

Figures, per implementation: Seam calls per scheduled code (median, p95); detection lag =
when the worker recorded the code scheduled - when the sandbox scheduled it
(`Sandbox.mark_scheduled_at`), in seconds and as a fraction of that code's programming time
(mark - created_at), over every code and over the codes created in the second half of the
run (once the initial backlog has gone through); how long the backlog took; job runs per stay
(codeprov).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio import Redis

from bench.common import (
    RESULTS_DIR,
    Target,
    all_settled,
    on_local_redis,
    print_targets,
    spread,
    write_results,
)
from bench.naive import NaiveRig, enqueue_naive, naive_worker
from bench.seamlog import LoggingTransport, SeamLog
from jobs.enqueue import enqueue_stay
from jobs.state import StayStore
from seam_sandbox import DeviceDefaults, Latency, Sandbox, SandboxClock, Scenario
from worker.logs import configure
from worker.queue import connect
from worker.runtime import make_worker
from worker.settings import Settings

RESULTS = RESULTS_DIR / "pipeline.json"
CALLS_TARGET = 4.0
LAG_TARGET = 0.25


@dataclass(frozen=True)
class Outcome:
    impl: str
    latency: str  # fixed | lognormal
    stays: int
    scheduled: int
    wall_s: float
    seam_calls: int
    rate_limited: int  # 429s from the sandbox
    unattributed_calls: int
    calls_per_code: dict[str, float | int]
    lag_s: dict[str, float | int]
    lag_fraction: dict[str, float | int]
    lag_fraction_second_half: dict[str, float | int]  # codes created once the backlog drained
    programming_s: dict[str, float | int]
    job_runs_per_stay: float | None
    by_route: dict[str, dict[str, int]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=2000, help="backlog of stays [2000]")
    parser.add_argument("--devices", type=int, default=200, help="locks they spread over [200]")
    parser.add_argument("--latency", default="fixed,lognormal",
                        help="programming-time models, comma-separated: fixed (the sandbox's "
                             "default, 5 s), lognormal (median 5 s, sigma 0.5) [fixed,lognormal]")
    parser.add_argument("--median", type=float, default=5.0,
                        help="programming time (fixed) or its median (lognormal), s [5]")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma [0.5]")
    parser.add_argument("--workers", type=int, default=4, help="in-process codeprov workers [4]")
    parser.add_argument("--max-jobs", type=int, default=10, help="CODEPROV_MAX_JOBS [10]")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other codeprov setting for the workers, e.g. queue_poll=0.02 "
                             "or poll_factor=1.1 (repeatable) [defaults]")
    parser.add_argument("--rate", type=float, default=1000,
                        help="CODEPROV_RATE_PER_SECOND, out of the way [1000]")
    parser.add_argument("--naive-max-jobs", type=int, default=200, help="naive slots [200]")
    parser.add_argument("--naive-interval", type=float, default=1.0, help="naive poll, s [1]")
    parser.add_argument("--impl", default="codeprov,naive", help="implementations to run")
    parser.add_argument("--naive-latency", default="lognormal",
                        help="the models the naive poller runs on [lognormal: on a fixed 5 s "
                             "its 1 s polls land just after each code is set, by construction]")
    parser.add_argument("--seed", type=int, default=0, help="sandbox seed [0]")
    parser.add_argument("--timeout", type=float, default=300, help="give up after, s [300]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    return on_local_redis(_main, args)


async def _main(args: argparse.Namespace, redis_url: str, info: dict[str, Any]) -> int:
    print(f"{args.stays} stays over {args.devices} locks; programming time {args.median} s "
          f"(fixed) / lognormal median {args.median} s sigma {args.sigma}; sandbox clock 1x",
          flush=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        _quiet_logs(Path(tmp) / "worker.log")
        for model in args.latency.split(","):
            for impl in args.impl.split(","):
                if impl == "naive" and model not in args.naive_latency.split(","):
                    continue
                async with Redis.from_url(redis_url) as redis:
                    await redis.flushdb()
                outcome = await RUNNERS[impl](args, redis_url, model)
                print(_row(outcome), flush=True)
                outcomes.append(outcome)
    targets = _targets(outcomes)
    print()
    print_targets(targets)
    write_results("pipeline", args.out, info, vars(args),
                  {"runs": [asdict(o) for o in outcomes]}, targets)
    return 0


def _quiet_logs(path: Path) -> None:
    """Workers log as in production (JSON, info), to a file rather than over the table."""
    os.environ.setdefault("CODEPROV_HEARTBEAT_FILE", str(path.with_name("heartbeat")))
    configure(fmt="json", level="info", stream=path.open("w"))


def _scenario(args: argparse.Namespace, model: str) -> Scenario:
    latency = (Latency.fixed(args.median) if model == "fixed"
               else Latency.lognormal(args.median, args.sigma))
    return Scenario(device_count=args.devices, device_defaults=DeviceDefaults(latency=latency))


def _settings(args: argparse.Namespace, redis_url: str, sandbox: Sandbox) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url, "seam_api_key": sandbox.api_key,
        "seam_endpoint": "http://sandbox", "rate_per_second": args.rate, "rate_burst": 10,
        "max_jobs": args.max_jobs, "log_format": "json", "log_level": "info",
    }
    return Settings(**(values | _overrides(args.set)))


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs for Settings (validated, and converted, by the Settings model)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in Settings.model_fields:
            raise SystemExit(f"--set {pair!r}: expected NAME=VALUE with a codeprov setting name")
        out[name] = value
    return out


def stays_for(sandbox: Sandbox, n: int, prefix: str = "stay") -> list[dict[str, str]]:
    """n stays round-robin over the locks, starting in 2 days: inside Seam's 72 h lead (the
    lock is programmed at once), not within a day (which codeprov would queue as urgent)."""
    starts = sandbox.clock.now() + timedelta(days=2)
    ends = starts + timedelta(days=2)
    devices = sandbox.device_ids
    return [{"booking_id": f"{prefix}-{i:06}", "device_id": devices[i % len(devices)],
             "starts_at": starts.isoformat(), "ends_at": ends.isoformat()} for i in range(n)]


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 32) -> None:
    """Run the calls, `limit` at a time."""
    it = iter(calls)

    async def lane() -> None:
        for call in it:
            await call()

    await asyncio.gather(*(lane() for _ in range(limit)))


class _Counted(set[str]):
    """make_worker's `running` set, counting the job runs it sees start."""

    started = 0

    def add(self, element: str) -> None:
        self.started += 1
        super().add(element)


async def _codeprov(args: argparse.Namespace, redis_url: str, model: str) -> Outcome:
    sandbox = Sandbox(_scenario(args, model), seed=args.seed, clock=SandboxClock(speed=1.0))
    log = SeamLog()
    transport = LoggingTransport(httpx.ASGITransport(app=sandbox.app), log)
    settings = _settings(args, redis_url, sandbox)
    pool = await connect(settings)
    stays = stays_for(sandbox, args.stays)
    runs = _Counted()
    try:
        now = sandbox.clock.now()
        await gather_limited([_enqueuer(pool, s, now) for s in stays])
        workers = [
            make_worker(settings, seam_transport=transport, clock=sandbox.clock.now,
                        handle_signals=False, running=runs)
            for _ in range(args.workers)
        ]
        store = StayStore(pool)
        wall = await _run_until(workers, lambda: _none_waiting(pool, store), args.timeout)
        states = [await store.get(s["booking_id"]) for s in stays]
    finally:
        await pool.aclose()
    seen = {s.booking_id: (s.access_code_id, s.scheduled_at) for s in states
            if s is not None and s.scheduled_at is not None and s.access_code_id is not None}
    return _outcome("codeprov", model, args, sandbox, log, seen, wall, runs.started)


def _enqueuer(pool: ArqRedis, stay: dict[str, str], now: datetime) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        result = await enqueue_stay(pool, stay, now=now)
        if result.result != "enqueued":
            raise RuntimeError(f"enqueue failed: {result}")
    return call


async def _none_waiting(pool: ArqRedis, store: StayStore) -> bool:
    """Every stay has its outcome (guarded ones stay in the index until check-out, so the index
    is no measure)."""
    return await all_settled(pool, store.prefix)


async def _naive(args: argparse.Namespace, redis_url: str, model: str) -> Outcome:
    sandbox = Sandbox(_scenario(args, model), seed=args.seed, clock=SandboxClock(speed=1.0))
    log = SeamLog()
    transport = LoggingTransport(httpx.ASGITransport(app=sandbox.app), log)
    settings = _settings(args, redis_url, sandbox)
    pool = await connect(settings)
    stays = stays_for(sandbox, args.stays)
    rigs: list[NaiveRig] = []
    try:
        await gather_limited([_naive_enqueuer(pool, s) for s in stays])
        worker = naive_worker(settings, rigs, transport=transport, clock=sandbox.clock.now,
                              max_jobs=args.naive_max_jobs, poll_delay=settings.queue_poll,
                              interval=args.naive_interval)

        async def done() -> bool:
            return bool(rigs) and len(rigs[0].scheduled) >= len(stays)

        wall = await _run_until([worker], done, args.timeout)
    finally:
        await pool.aclose()
    seen = rigs[0].scheduled if rigs else {}
    return _outcome("naive", model, args, sandbox, log, seen, wall, None)


def _naive_enqueuer(pool: ArqRedis, stay: dict[str, str]) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        await enqueue_naive(pool, stay)
    return call


async def _run_until(
    workers: list[Worker], done: Callable[[], Awaitable[bool]], timeout: float
) -> float:
    """Run the workers until done() or timeout; the seconds it took."""
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    start = time.monotonic()
    try:
        while not await done():
            if time.monotonic() - start > timeout:
                print(f"  timed out after {timeout:.0f} s: figures cover what finished")
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - start
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w.close()


@dataclass(frozen=True)
class _Code:
    created: datetime
    lag: float  # seconds from the sandbox scheduling it to the worker recording it
    took: float  # its programming time


def _codes(sandbox: Sandbox, log: SeamLog, seen: dict[str, tuple[str, datetime]]) -> list[_Code]:
    """Every code the worker saw scheduled, in order of creation."""
    created = log.created()
    codes = []
    for acid, at in seen.values():
        mark = sandbox.mark_scheduled_at(acid)
        if mark is None or acid not in created:
            continue
        born = datetime.fromisoformat(created[acid]["created_at"])
        codes.append(_Code(born, (at - mark).total_seconds(), (mark - born).total_seconds()))
    return sorted(codes, key=lambda c: c.created)


def _outcome(
    impl: str, model: str, args: argparse.Namespace, sandbox: Sandbox, log: SeamLog,
    seen: dict[str, tuple[str, datetime]], wall: float, job_runs: int | None,
) -> Outcome:
    per_stay, unattributed = log.per_stay()
    codes = _codes(sandbox, log, seen)
    later = codes[len(codes) // 2:]
    return Outcome(
        impl=impl, latency=model, stays=args.stays, scheduled=len(seen), wall_s=round(wall, 1),
        seam_calls=len(log.calls),
        rate_limited=sum(c.status == 429 for c in log.calls),
        unattributed_calls=unattributed,
        calls_per_code=spread([float(per_stay[b]) for b in seen], 2),
        lag_s=spread([c.lag for c in codes]),
        lag_fraction=spread([c.lag / c.took for c in codes if c.took > 0]),
        lag_fraction_second_half=spread([c.lag / c.took for c in later if c.took > 0]),
        programming_s=spread([c.took for c in codes]),
        job_runs_per_stay=round(job_runs / args.stays, 2) if job_runs is not None else None,
        by_route={r: dict(c) for r, c in log.by_route().items()},
    )


RUNNERS: dict[str, Callable[[argparse.Namespace, str, str], Awaitable[Outcome]]] = {
    "codeprov": _codeprov,
    "naive": _naive,
}


def _row(o: Outcome) -> str:
    c, lag, f, f2 = o.calls_per_code, o.lag_s, o.lag_fraction, o.lag_fraction_second_half
    runs = f", {o.job_runs_per_stay} job runs/stay" if o.job_runs_per_stay is not None else ""
    return (f"  {o.impl:8} {o.latency:9} {o.scheduled}/{o.stays} scheduled in {o.wall_s} s; "
            f"calls/code p50 {c['p50']:g} p95 {c['p95']:g}; lag p50 {lag['p50']:.2f} s "
            f"p95 {lag['p95']:.2f} s = {f['p50']:.0%} / {f['p95']:.0%} of programming time "
            f"(2nd half {f2['p50']:.0%} / {f2['p95']:.0%}); {o.rate_limited} 429s{runs}")


def _targets(outcomes: list[Outcome]) -> list[Target]:
    targets = []
    for ours in (o for o in outcomes if o.impl == "codeprov"):
        naive = next((o for o in outcomes if o.impl == "naive" and o.latency == ours.latency),
                     None)
        calls, lag = float(ours.calls_per_code["p50"]), float(ours.lag_fraction["p95"])
        later = float(ours.lag_fraction_second_half["p95"])
        calls_note = f"naive: {naive.calls_per_code['p50']:g}" if naive else ""
        lag_note = f"2nd half {later:.2f}" + (
            f"; naive {float(naive.lag_fraction['p95']):.2f}" if naive else "")
        targets += [
            Target(f"Seam calls per code, median ({ours.latency})", calls, "",
                   f"<= {CALLS_TARGET:g}", calls <= CALLS_TARGET, calls_note),
            Target(f"lag p95 / programming time ({ours.latency})", round(lag, 3), "",
                   f"<= {LAG_TARGET}", lag <= LAG_TARGET, lag_note),
        ]
    return targets
