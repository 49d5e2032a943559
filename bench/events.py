"""`python -m bench events`: detection lag and Seam calls per code, polling vs feed vs webhooks.

One run, three modes, each on a fresh sandbox and an emptied Redis, on bench/pipeline.py's
lognormal model and machinery (`--stays` over `--devices`, programming time lognormal median
`--median` s sigma `--sigma`, sandbox clock 1x, `--workers` in-process arq workers built by
`make_worker`, every Seam request logged by bench.seamlog):
- polling: CODEPROV_EVENTS_POLL=0, no webhook: the deferred checks alone.
- feed: the events feed at its default interval, no webhook.
- webhooks: a webhook registered with the sandbox's `/webhooks/create`; the sandbox delivers
  Svix-signed events over loopback HTTP to `worker.webhook.webhook_app` (uvicorn on 127.0.0.1,
  this process, bench/webhooks_rig.py), and the feed runs at its default as catch-up.

A mode ends when every stay's record is scheduled or failed (a guard may keep scheduled stays
in the queue). Figures per mode (bench/pipeline.py's): detection lag p95 as a fraction of each
code's programming time, Seam calls per scheduled code (median, p95: the stay's own calls;
floor 2, generate_code + create), plus the feed's `/events/list` calls (not any one stay's:
shown apart and per code) and the webhook deliveries by outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis
from redis.asyncio import Redis

from bench.common import (
    RESULTS_DIR,
    Target,
    on_local_redis,
    print_targets,
    write_results,
)
from bench.pipeline import (
    Outcome,
    _Counted,
    _enqueuer,
    _outcome,
    _quiet_logs,
    _run_until,
    _scenario,
    _settings,
    gather_limited,
    stays_for,
)
from bench.seamlog import LoggingTransport, SeamLog
from bench.webhooks_rig import receiving
from jobs.events import read_counts
from jobs.state import StayStore
from seam_sandbox import Sandbox, SandboxClock
from worker.queue import connect
from worker.runtime import make_worker
from worker.settings import Settings

RESULTS = RESULTS_DIR / "events.json"
MODES = ("polling", "feed", "webhooks")
LAG_TARGET = 0.05  # of the code's programming time, with webhooks
CALLS_TARGET = 2.2  # median per code, with webhooks (floor 2)
SETTLED = frozenset({"scheduled", "failed", "cancelled"})


@dataclass(frozen=True)
class ModeOutcome:
    mode: str
    run: Outcome  # bench/pipeline.py's figures for this mode
    events_list_calls: int  # the feed's, for every stay at once
    events_list_calls_per_code: float
    deliveries: dict[str, int]  # webhook attempts by outcome (HTTP status or a word)
    events: dict[str, int]  # {prefix}:events:counts at the end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=400, help="backlog of stays [400]")
    parser.add_argument("--devices", type=int, default=100, help="locks they spread over [100]")
    parser.add_argument("--median", type=float, default=5.0,
                        help="median programming time (lognormal), s [5]")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma [0.5]")
    parser.add_argument("--workers", type=int, default=2, help="in-process codeprov workers [2]")
    parser.add_argument("--max-jobs", type=int, default=10, help="CODEPROV_MAX_JOBS [10]")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other codeprov setting, for every mode (repeatable)")
    parser.add_argument("--rate", type=float, default=1000,
                        help="CODEPROV_RATE_PER_SECOND, out of the way [1000]")
    parser.add_argument("--modes", default=",".join(MODES), help=f"[{','.join(MODES)}]")
    parser.add_argument("--arrivals", type=float, default=0,
                        help="enqueue the stays evenly over this many s while workers run "
                             "(0: all before they start, a backlog) [0]")
    parser.add_argument("--seed", type=int, default=0, help="sandbox seed [0]")
    parser.add_argument("--timeout", type=float, default=180, help="per mode, s [180]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    return on_local_redis(_main, args)


async def _main(args: argparse.Namespace, redis_url: str, info: dict[str, Any]) -> int:
    print(f"{args.stays} stays over {args.devices} locks; programming time lognormal median "
          f"{args.median} s sigma {args.sigma}; sandbox clock 1x", flush=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        _quiet_logs(Path(tmp) / "worker.log")
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
            async with Redis.from_url(redis_url) as redis:
                await redis.flushdb()
            outcome = await _mode(args, redis_url, mode)
            print(_row(outcome), flush=True)
            outcomes.append(outcome)
    targets = _targets(outcomes)
    print()
    print_targets(targets)
    write_results("events", args.out, info, vars(args),
                  {"modes": [asdict(o) for o in outcomes]}, targets)
    return 0


def _mode_settings(args: argparse.Namespace, redis_url: str, sandbox: Sandbox,
                   mode: str) -> Settings:
    extra = ["events_poll=0"] if mode == "polling" else []
    return _settings(argparse.Namespace(**(vars(args) | {"set": args.set + extra})),
                     redis_url, sandbox)


async def _mode(args: argparse.Namespace, redis_url: str, mode: str) -> ModeOutcome:
    sandbox = Sandbox(_scenario(args, "lognormal"), seed=args.seed, clock=SandboxClock(speed=1.0))
    log = SeamLog()
    transport = LoggingTransport(httpx.ASGITransport(app=sandbox.app), log)
    settings = _mode_settings(args, redis_url, sandbox, mode)
    pool = await connect(settings)
    stays = stays_for(sandbox, args.stays)
    runs = _Counted()
    store = StayStore(pool, settings.key_prefix)
    ids = [s["booking_id"] for s in stays]
    try:
        async with AsyncExitStack() as stack:
            if mode == "webhooks":
                await stack.enter_async_context(_webhooks(sandbox, settings, pool))
            now = sandbox.clock.now()
            if args.arrivals > 0:  # stays arriving over time: lag without a backlog's queueing
                feeder = asyncio.create_task(_arrive(pool, stays, sandbox, args.arrivals))
                stack.push_async_callback(_finished, feeder)
            else:
                await gather_limited([_enqueuer(pool, s, now) for s in stays])
            workers = [
                make_worker(settings, seam_transport=transport, clock=sandbox.clock.now,
                            handle_signals=False, running=runs)
                for _ in range(args.workers)
            ]
            wall = await _run_until(workers, lambda: _settled(pool, store, ids), args.timeout)
        states = [await store.get(b) for b in ids]
        counts = await read_counts(pool, settings.key_prefix)
    finally:
        await pool.aclose()
    seen = {s.booking_id: (s.access_code_id, s.scheduled_at) for s in states
            if s is not None and s.scheduled_at is not None and s.access_code_id is not None}
    run = _outcome(mode, "lognormal", args, sandbox, log, seen, wall, runs.started)
    listed = sum(c.route == "/events/list" for c in log.calls)
    delivered = Counter(str(d["outcome"]) for d in sandbox.deliveries())
    return ModeOutcome(mode, run, listed, round(listed / max(1, len(seen)), 4),
                       dict(delivered), counts)


async def _arrive(pool: ArqRedis, stays: list[dict[str, Any]], sandbox: Sandbox,
                  over: float) -> None:
    """Enqueue the stays one by one, evenly over `over` seconds."""
    start = time.monotonic()
    for i, stay in enumerate(stays):
        await asyncio.sleep(max(0.0, start + i * over / len(stays) - time.monotonic()))
        await _enqueuer(pool, stay, sandbox.clock.now())()


async def _finished(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def _webhooks(sandbox: Sandbox, settings: Settings, pool: ArqRedis) -> AsyncIterator[None]:
    """The receiver served and registered, and the sandbox delivering to it in real time."""
    async with receiving(sandbox, settings, pool), sandbox.delivering(interval=0.02):
        yield


async def _settled(pool: ArqRedis, store: StayStore, ids: list[str]) -> bool:
    """Every stay scheduled or failed (a guarded stay stays in the index and the queue)."""
    raws = await pool.mget([store.key(b) for b in ids])
    return all(raw is not None and json.loads(raw).get("state") in SETTLED for raw in raws)


def _row(o: ModeOutcome) -> str:
    r = o.run
    c, lag, f = r.calls_per_code, r.lag_s, r.lag_fraction
    ok = o.deliveries.get("200", 0)
    return (f"  {o.mode:8} {r.scheduled}/{r.stays} scheduled in {r.wall_s} s; calls/code "
            f"p50 {c['p50']:g} p95 {c['p95']:g}; lag p50 {lag['p50']:.2f} s p95 "
            f"{lag['p95']:.2f} s = {f['p50']:.3f} / {f['p95']:.3f} of programming time; "
            f"/events/list {o.events_list_calls}; webhooks delivered {ok}; "
            f"{r.rate_limited} 429s")


def _targets(outcomes: list[ModeOutcome]) -> list[Target]:
    by_mode = {o.mode: o for o in outcomes}
    hooks = by_mode.get("webhooks")
    others = [o for o in outcomes if o.mode != "webhooks"]

    def note(field: str, figure: str) -> str:
        return "; ".join(f"{o.mode} {float(getattr(o.run, field)[figure]):g}" for o in others)

    if hooks is None:
        return [Target("events: lag p95 / programming time (webhooks)", None, "",
                       f"<= {LAG_TARGET}", None, note("lag_fraction", "p95")),
                Target("events: Seam calls per code, median (webhooks)", None, "",
                       f"<= {CALLS_TARGET}", None, note("calls_per_code", "p50"))]
    lag = float(hooks.run.lag_fraction["p95"])
    calls = float(hooks.run.calls_per_code["p50"])
    p95 = hooks.run.calls_per_code["p95"]
    return [
        Target("events: lag p95 / programming time (webhooks)", round(lag, 3), "",
               f"<= {LAG_TARGET}", lag <= LAG_TARGET, note("lag_fraction", "p95")),
        Target("events: Seam calls per code, median (webhooks)", calls, "",
               f"<= {CALLS_TARGET}", calls <= CALLS_TARGET,
               f"p95 {p95:g}; feed /events/list {hooks.events_list_calls_per_code:g} per code; "
               + note("calls_per_code", "p50")),
    ]
