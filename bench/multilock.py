"""`python -m bench multilock`: Seam calls of a 3-lock stay beside a 1-lock stay's, in one run.

Workload: `--stays` stays of one lock and as many of three locks (default 50 each), enqueued
interleaved before the workers start. Each lock carries `--codes-per-lock` codes (2) whichever
kind its stays are: the 1-lock stays round-robin over locks of their own, each 3-lock stay on
three locks of its own group (a lock queues its codes: a lock with more codes programs them
later, and a poller pays for the wait, so unequal loads would measure the loads, not the
kinds). Every lock programs a code in a lognormal time (median `--median` 5 s, sigma 0.5) on
the sandbox clock at real speed; Seam's per-device limits apply, in the sandbox and in our
limiter. Both kinds share the same workers and moment.

In-process like `bench pipeline`: real Redis, `--workers` real arq workers from `make_worker`,
the sandbox over ASGITransport, every Seam request logged on its way (bench.seamlog) and
attributed to its stay (a part's create carries the stay's code name). The run ends once no
record is unsettled and no group outcome is left to report: the calls counted are those that
provision the stay (the guard's looks come days later).

Figures, per kind: Seam calls per stay (median, p95, by route), stays scheduled, shared PINs
(3-lock stays whose locks all got one PIN). Target (issue 16): a 3-lock stay costs at most
3 x a 1-lock stay's calls + 1, on the mean (means add up; the median and p95
rows beside it).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis
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
from bench.pipeline import (
    _enqueuer,
    _quiet_logs,
    _run_until,
    _scenario,
    _settings,
    gather_limited,
)
from bench.seamlog import LoggingTransport, SeamLog
from jobs.group import REGROUP, read_group
from jobs.state import Phase, StayStore
from seam_sandbox import Sandbox, SandboxClock
from worker.queue import connect
from worker.runtime import make_worker

RESULTS = RESULTS_DIR / "multilock.json"
CREATE = "/access_codes/create"
KINDS = {"one_lock": 1, "three_locks": 3}


@dataclass(frozen=True)
class Kind:
    kind: str
    locks: int
    stays: int
    scheduled: int
    shared_pin: int  # stays whose locks all have one PIN
    calls_per_stay: dict[str, float | int]
    by_route: dict[str, dict[str, float | int]]  # route -> spread of that route's calls per stay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stays", type=int, default=50,
                        help="stays of each kind, 1 lock and 3 locks [50]")
    parser.add_argument("--codes-per-lock", type=int, default=2,
                        help="codes each lock carries, for either kind [2]")
    parser.add_argument("--median", type=float, default=5.0,
                        help="median programming time, s (lognormal) [5]")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma [0.5]")
    parser.add_argument("--workers", type=int, default=4, help="in-process codeprov workers [4]")
    parser.add_argument("--max-jobs", type=int, default=10, help="CODEPROV_MAX_JOBS [10]")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other codeprov setting for the workers (repeatable)")
    parser.add_argument("--rate", type=float, default=1000,
                        help="CODEPROV_RATE_PER_SECOND, out of the way [1000]")
    parser.add_argument("--seed", type=int, default=0, help="sandbox seed [0]")
    parser.add_argument("--timeout", type=float, default=300, help="give up after, s [300]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    if args.stays < 1 or args.codes_per_lock < 1:
        raise SystemExit("--stays and --codes-per-lock: at least 1")
    args.devices = 4 * _groups(args)  # the 1-lock stays' locks, then 3 per group of 3-lock stays
    return on_local_redis(_main, args)


async def _main(args: argparse.Namespace, redis_url: str, info: dict[str, Any]) -> int:
    print(f"{args.stays} stays of 1 lock and {args.stays} of 3 locks over {args.devices} locks; "
          f"programming time lognormal median {args.median} s sigma {args.sigma}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-multilock-") as tmp:
        _quiet_logs(Path(tmp) / "worker.log")
        async with Redis.from_url(redis_url) as redis:
            await redis.flushdb()
        kinds, wall, unattributed = await _measure(args, redis_url)
    for k in kinds:
        c = k.calls_per_stay
        print(f"  {k.kind:11} {k.scheduled}/{k.stays} scheduled, {k.shared_pin} with one PIN; "
              f"calls/stay p50 {c['p50']:g} p95 {c['p95']:g}", flush=True)
    targets = _targets(kinds)
    print()
    print_targets(targets)
    results = {"kinds": [asdict(k) for k in kinds], "wall_s": round(wall, 1),
               "unattributed_calls": unattributed}
    write_results("multilock", args.out, info, vars(args), results, targets)
    return 0


def _groups(args: argparse.Namespace) -> int:
    """How many locks the 1-lock stays share (as many groups of three the 3-lock stays)."""
    return -(-int(args.stays) // int(args.codes_per_lock))


def stays_of(sandbox: Sandbox, n: int, groups: int) -> list[dict[str, Any]]:
    """n stays of each kind, interleaved, starting in 2 days (inside Seam's lead, not urgent):
    1-lock stays on the first `groups` locks, 3-lock stays on `groups` groups of three after."""
    starts = sandbox.clock.now() + timedelta(days=2)
    window = {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=2)).isoformat()}
    ones, threes = sandbox.device_ids[:groups], sandbox.device_ids[groups:]
    out: list[dict[str, Any]] = []
    for i in range(n):
        g = i % groups
        out.append({"booking_id": f"one-{i:05}", "device_id": ones[g]} | window)
        out.append({"booking_id": f"three-{i:05}", "device_ids": threes[3 * g:3 * g + 3]}
                   | window)
    return out


async def _measure(args: argparse.Namespace, redis_url: str) -> tuple[list[Kind], float, int]:
    sandbox = Sandbox(_scenario(args, "lognormal"), seed=args.seed, clock=SandboxClock(speed=1.0))
    log = SeamLog()
    transport = LoggingTransport(httpx.ASGITransport(app=sandbox.app), log)
    settings = _settings(args, redis_url, sandbox)
    pool = await connect(settings)
    both = stays_of(sandbox, args.stays, _groups(args))
    try:
        now = sandbox.clock.now()
        await gather_limited([_enqueuer(pool, s, now) for s in both])
        workers = [make_worker(settings, seam_transport=transport, clock=sandbox.clock.now,
                               handle_signals=False) for _ in range(args.workers)]
        wall = await _run_until(workers, lambda: _settled(pool), args.timeout)
        store = StayStore(pool)
        pins = {s["booking_id"]: await _pins(store, s["booking_id"]) for s in both}
    finally:
        await pool.aclose()
    routes, unattributed = calls_by_stay_route(log)
    kinds = [_kind(name, [s for s in both if ("device_ids" in s) == (locks == 3)], pins, routes)
             for name, locks in KINDS.items()]
    return kinds, wall, unattributed


async def _settled(pool: ArqRedis) -> bool:
    """No record on its way to an outcome and no group outcome left to write."""
    return await all_settled(pool, "codeprov") and not await pool.zcard(f"codeprov:{REGROUP}")


async def _pins(store: StayStore, booking_id: str) -> list[str | None] | None:
    """The PIN of each lock of a scheduled stay; None if the stay is not scheduled."""
    _, records = await read_group(store, booking_id)
    if not records or any(r is None or r.state is not Phase.SCHEDULED for _, r in records):
        return None
    return [r.code for _, r in records if r is not None]


def calls_by_stay_route(log: SeamLog) -> tuple[dict[str, Counter[str]], int]:
    """route -> calls per booking id, and the calls attributed to no stay.

    SeamLog attributes a read to its stay through the creates' answers: each route is counted
    on a log of that route's calls plus every create, less the creates' own counts.
    """
    creates = [c for c in log.calls if c.route == CREATE]
    created, _ = SeamLog(list(creates)).per_stay()
    _, unattributed = log.per_stay()
    out: dict[str, Counter[str]] = {CREATE: created}
    for route in sorted({c.route for c in log.calls} - {CREATE}):
        counts, _ = SeamLog(creates + [c for c in log.calls if c.route == route]).per_stay()
        if counts - created:
            out[route] = counts - created
    return out, unattributed


def _kind(name: str, stays: list[dict[str, Any]], pins: dict[str, list[str | None] | None],
          routes: dict[str, Counter[str]]) -> Kind:
    done = [s["booking_id"] for s in stays if pins[s["booking_id"]] is not None]
    totals = [float(sum(routes[r][b] for r in routes)) for b in done]
    return Kind(
        kind=name, locks=KINDS[name], stays=len(stays), scheduled=len(done),
        shared_pin=sum(len(set(pins[b] or [])) == 1 for b in done),
        calls_per_stay=spread(totals, 2),
        by_route={r: spread([float(routes[r][b]) for b in done], 2) for r in routes},
    )


def _targets(kinds: list[Kind]) -> list[Target]:
    """3 x + 1, on the mean first: a stay's calls are the sum of its locks', and means add up;
    medians do not (a right-skewed count per lock puts the sum's median above 3 x the median),
    so the median and p95 rows are shown beside it, not instead."""
    one, three = kinds[0].calls_per_stay, kinds[1].calls_per_stay
    out = []
    for q, label in (("mean", "mean"), ("p50", "median"), ("p95", "p95")):
        bound = round(3 * float(one[q]) + 1, 2)
        value = float(three[q])
        out.append(Target(f"Seam calls of a 3-lock stay, {label}", value, "",
                          f"<= {bound:g}", value <= bound,
                          f"1-lock stay {float(one[q]):g}; 3 x that + 1"))
    return out
