"""`python -m bench guarded`: Seam calls per guarded (already scheduled) stay per simulated day.

Model: `--stays` stays (10,000) round-robin over `--devices` locks, starts_at uniform over the
next 30 days, 1-7 nights, fixed seed; programming time lognormal (median 5 s, sigma 0.5); the
sandbox schedules a code on its lock `--lead-hours` before starts_at (744: at once, so every
stay is guarded from the start; Seam's native-scheduling lead is 72). Rate limits are set out
of the way: the figure is calls, not their pace. Two modes, each on a fresh sandbox and an
emptied Redis:
- webhooks: the sandbox delivers Svix-signed webhooks over loopback HTTP to our receiver
  (bench/webhooks_rig.py), and the events feed runs at its cadence as catch-up.
- polling: CODEPROV_EVENTS_POLL=0, no webhook (`--polling-stays`, fewer: its looks are many).

Simulated time (bench/simstep.py): the real step `jobs.pipeline.advance_stay` runs in order of
each record's `next_check_at`, on a frozen sandbox clock moved forward step by step (the deps'
clock is the sandbox's), until every stay's ends_at has passed (or `--days`). Webhooks due are
delivered every `--tick` simulated seconds; a stay they wake steps at once. The feed's cadence
is CODEPROV_EVENTS_WEBHOOK_POLL while `{prefix}:webhooks:seen` exists and the setting does, else
CODEPROV_EVENTS_POLL (a key set with EX lives on in simulated time: the run is minutes long).
It runs in simulated time, `EventsFeed.tick()` (real polls of `/events/list`), every
max(cadence, `--feed-every`); its calls are counted analytically when the cadence is shorter: each
real poll's pages x (seconds since the previous poll / cadence), as that many polls would read.

Figures: calls per guarded stay-day, where a stay is guarded from its record's scheduled_at to
its ends_at, by kind of step (safety looks, the confirming look at starts_at - at-risk margin,
steps an event woke, the chain's end at ends_at) and route, plus the feed's `/events/list`
calls; the setup (provisioning) calls apart. Whatever the code at HEAD does is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.common import (
    RESULTS_DIR,
    Target,
    on_local_redis,
    print_targets,
    write_results,
)
from bench.pipeline import _overrides, _quiet_logs, gather_limited
from bench.seamlog import LoggingTransport, SeamLog
from bench.simstep import SimRunner
from bench.webhooks_rig import receiving
from jobs.enqueue import enqueue_stay
from jobs.state import StayState
from seam_sandbox import DeviceDefaults, Latency, RateLimits, Sandbox, SandboxClock, Scenario
from worker.events_feed import EventsFeed
from worker.queue import connect
from worker.settings import Settings
from worker.wiring import build_deps, feed_for

RESULTS = RESULTS_DIR / "guarded.json"
TARGET = 0.1  # calls per guarded stay per day, with webhooks
FREE = 1_000_000
GUARD_KINDS = ("safety", "confirming", "woken", "end")


@dataclass(frozen=True)
class GuardOutcome:
    mode: str
    stays: int
    scheduled: int
    simulated_days: float
    guarded_stay_days: float
    wall_s: float
    steps: dict[str, int]
    calls: dict[str, dict[str, int]]  # kind of step (and "feed") -> route -> calls
    per_stay_day: dict[str, float]  # kind -> calls / guarded stay-day, and "total"
    feed_polls: int  # real polls; their calls scaled to the cadence in calls["feed"]
    feed_interval_s: list[float]  # the cadences used


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=10_000, help="guarded stays [10000]")
    parser.add_argument("--polling-stays", type=int, default=500,
                        help="stays in the polling-only mode [500]")
    parser.add_argument("--devices", type=int, default=1000, help="locks [1000]")
    parser.add_argument("--lead-hours", type=float, default=744,
                        help="sandbox scheduling lead before starts_at, h [744]")
    parser.add_argument("--days", type=float, default=0,
                        help="simulated days (0: until the last ends_at) [0]")
    parser.add_argument("--tick", type=float, default=300,
                        help="webhook delivery period, simulated s [300]")
    parser.add_argument("--feed-every", type=float, default=3600,
                        help="real feed polls at most this often, simulated s [3600]")
    parser.add_argument("--modes", default="webhooks,polling", help="[webhooks,polling]")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other codeprov setting, for every mode (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed [0]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    return on_local_redis(_main, args)


async def _main(args: argparse.Namespace, redis_url: str, info: dict[str, Any]) -> int:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-guarded-") as tmp:
        _quiet_logs(Path(tmp) / "worker.log")
        for mode in args.modes.split(","):
            if mode not in ("webhooks", "polling"):
                raise SystemExit(f"--modes: {mode!r} is not webhooks or polling")
            async with Redis.from_url(redis_url) as redis:
                await redis.flushdb()
            outcome = await _mode(args, redis_url, mode)
            print(_row(outcome), flush=True)
            outcomes.append(outcome)
    targets = _targets(outcomes)
    print()
    print_targets(targets)
    write_results("guarded", args.out, info, vars(args),
                  {"modes": [asdict(o) for o in outcomes]}, targets)
    return 0


def _sandbox(args: argparse.Namespace) -> Sandbox:
    limits = RateLimits(create_per_minute=FREE, update_per_minute=FREE, delete_per_minute=FREE)
    scenario = Scenario(
        device_count=args.devices, native_scheduling_lead_hours=args.lead_hours,
        rate_limits=limits, device_defaults=DeviceDefaults(latency=Latency.lognormal(5.0, 0.5)),
    )
    return Sandbox(scenario, seed=args.seed, clock=SandboxClock(speed=0))


def _settings(args: argparse.Namespace, redis_url: str, sandbox: Sandbox, mode: str) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url, "seam_api_key": sandbox.api_key,
        "seam_endpoint": "http://sandbox", "rate_per_second": FREE, "rate_burst": 1000,
        "device_creates_per_minute": FREE, "device_updates_per_minute": FREE,
        "device_deletes_per_minute": FREE, "log_format": "json", "log_level": "info",
    }
    if mode == "polling":
        values["events_poll"] = 0
    return Settings(**(values | _overrides(args.set)))


def stays(sandbox: Sandbox, n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(f"{seed}:guarded")
    now, devices = sandbox.clock.now(), sandbox.device_ids
    out = []
    for i in range(n):
        starts = now + timedelta(hours=1) + timedelta(days=30) * rng.random()
        ends = starts + timedelta(days=rng.randint(1, 7))
        out.append({"booking_id": f"g-{i:06}", "device_id": devices[i % len(devices)],
                    "starts_at": starts.isoformat(), "ends_at": ends.isoformat()})
    return out


async def _mode(args: argparse.Namespace, redis_url: str, mode: str) -> GuardOutcome:
    sandbox = _sandbox(args)
    log = SeamLog()
    settings = _settings(args, redis_url, sandbox, mode)
    pool = await connect(settings)
    deps = build_deps(settings, pool, clock=sandbox.clock.now,
                      seam_transport=LoggingTransport(httpx.ASGITransport(app=sandbox.app), log))
    sim = SimRunner(deps, sandbox, log)
    n = args.stays if mode == "webhooks" else args.polling_stays
    booked = stays(sandbox, n, args.seed)
    start = sandbox.clock.now()
    end = max(datetime.fromisoformat(s["ends_at"]) for s in booked) + timedelta(hours=1)
    if args.days > 0:
        end = min(end, start + timedelta(days=args.days))
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await gather_limited([_enqueue(sim, s) for s in booked])
        if mode == "webhooks":
            async with receiving(sandbox, settings, pool):
                feed = feed_for(settings, deps, "bench-guarded")
                polls, cadences = await _simulate(sim, end, args, feed)
        else:
            polls, cadences = await _simulate(sim, end, args, None)
        states = [await deps.store.get(s["booking_id"]) for s in booked]
    finally:
        await deps.seam.aclose()
        await pool.aclose()
    guarded = sum(_guarded_days(s, end) for s in states if s is not None)
    return _outcome(mode, sim, booked, states, start, end, guarded, loop.time() - began,
                    polls, cadences)


def _enqueue(sim: SimRunner, stay: dict[str, str]) -> Any:
    async def call() -> None:
        result = await enqueue_stay(sim.deps.redis, stay, now=sim.now)
        if result.result != "enqueued":
            raise RuntimeError(f"enqueue failed: {result}")
        await sim.schedule(stay["booking_id"])
    return call


async def _simulate(
    sim: SimRunner, end: datetime, args: argparse.Namespace, feed: EventsFeed | None
) -> tuple[int, list[float]]:
    """Steps, deliveries and feed polls in time order until `end`; the polls and cadences."""
    step = timedelta(seconds=args.tick)
    next_feed = sim.now if feed is not None else None
    polls, cadences, estimated = 0, set(), 0.0
    last = sim.now
    while True:
        due = [t for t in (sim.next_due(), next_feed) if t is not None]
        if feed is not None:
            due.append(sim.now + step)  # deliveries
        if not due or min(due) > end:
            break
        sim.advance_to(min(due))
        await sim.run_due()
        woke = await sim.sandbox.deliver_once() if feed is not None else 0
        if feed is not None and next_feed is not None and sim.now >= next_feed:
            interval = await _feed_interval(sim, feed)
            before = len(sim.log.calls)
            await feed.tick()
            polls += 1
            pages = len(sim.log.calls) - before
            gap = (sim.now - last).total_seconds() if polls > 1 else interval
            estimated += pages * max(1.0, gap / interval)
            last = sim.now
            cadences.add(interval)
            next_feed = sim.now + timedelta(seconds=max(interval, args.feed_every))
            woke = 1
        if woke:
            await sim.run_woken()
    if polls:
        sim.tally.calls["feed"] = Counter({"/events/list": round(estimated)})
        sim.tally.steps["feed"] = polls
    return polls, sorted(cadences)


async def _feed_interval(sim: SimRunner, feed: EventsFeed) -> float:
    """DESIGN15's cadence: the webhook catch-up interval while webhooks arrive, if it exists."""
    slow = getattr(sim.deps.settings, "events_webhook_poll", None)
    seen = await sim.deps.redis.exists(f"{sim.deps.store.prefix}:webhooks:seen")
    return float(slow) if slow and seen else float(feed.interval)


def _guarded_days(state: StayState, end: datetime) -> float:
    since, ends = state.scheduled_at, state.stay.ends_at
    if since is None or ends is None:
        return 0.0
    return max(0.0, (min(ends, end) - since).total_seconds() / 86400)


def _outcome(
    mode: str, sim: SimRunner, booked: list[dict[str, str]], states: list[Any],
    start: datetime, end: datetime, guarded: float, wall: float, polls: int,
    cadences: list[float],
) -> GuardOutcome:
    calls = {kind: dict(routes) for kind, routes in sim.tally.calls.items()}
    per_day = {kind: round(sum(calls.get(kind, {}).values()) / guarded, 4) if guarded else 0.0
               for kind in (*GUARD_KINDS, "feed")}
    per_day["total"] = round(sum(per_day.values()), 4)
    return GuardOutcome(
        mode=mode, stays=len(booked),
        scheduled=sum(s is not None and s.scheduled_at is not None for s in states),
        simulated_days=round((end - start).total_seconds() / 86400, 2),
        guarded_stay_days=round(guarded, 1), wall_s=round(wall, 1),
        steps=dict(sim.tally.steps), calls=calls, per_stay_day=per_day, feed_polls=polls,
        feed_interval_s=cadences,
    )


def _row(o: GuardOutcome) -> str:
    d = o.per_stay_day
    kinds = ", ".join(f"{k} {d[k]:g}" for k in (*GUARD_KINDS, "feed"))
    setup = sum(o.calls.get("setup", Counter()).values())
    return (f"  {o.mode:8} {o.scheduled}/{o.stays} scheduled; {o.simulated_days} days, "
            f"{o.guarded_stay_days} guarded stay-days in {o.wall_s} s; calls/stay/day "
            f"{d['total']:g} ({kinds}); setup calls {setup}; steps {o.steps}")


def _targets(outcomes: list[GuardOutcome]) -> list[Target]:
    hooks = next((o for o in outcomes if o.mode == "webhooks"), None)
    polling = next((o for o in outcomes if o.mode == "polling"), None)
    note = f"polling only: {polling.per_stay_day['total']:g}" if polling else ""
    if hooks is None:
        return [Target("guarded: calls per stay per day (webhooks)", None, "", f"<= {TARGET}",
                       None, note)]
    value = hooks.per_stay_day["total"]
    kinds = ", ".join(f"{k} {hooks.per_stay_day[k]:g}" for k in (*GUARD_KINDS, "feed"))
    return [Target("guarded: calls per stay per day (webhooks)", value, "", f"<= {TARGET}",
                   value <= TARGET and hooks.guarded_stay_days > 0, f"{kinds}; {note}")]
