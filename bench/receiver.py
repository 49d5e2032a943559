"""`python -m bench receiver`: the webhook receiver's verified events/s on one core, and latency.

The receiver runs as an operator runs it: `codeprov webhook --host 127.0.0.1 --port P` in a
subprocess pinned to one core, with a generated `whsec_` secret and a private redis-server.
The benchmark signs its events with the `svix` library beforehand (Seam-shaped `access_code.*`
bodies, `--indexed` of them about codes of waiting stays, so they wake a check; the rest about
codes of no stay of ours) and fires them from the other core, the redis-server beside it, over
kept-alive HTTP/1.1 connections written by hand (bench/loadgen.py: httpx would cost the
generator about as much per request as the receiver spends).

Phases, each with its own freshly signed events:
- baseline: `GET /healthz` closed-loop at `--concurrency`: the same uvicorn and Starlette, no
  body, no verification, no Redis; the verified rate is also given as a ratio of it.
- saturation: `--events` signed events closed-loop at `--concurrency`: events/s, latency.
- offered: each of `--rates` open-loop for `--seconds`: request i is due at t0 + i/rate, and its
  latency counts from then (a late send is the receiver's delay too, not hidden).

Each phase reports the CPU (cores) of the receiver, of the load generator (this process) and of
Redis, so a generator short of CPU shows. Every answer must be 200; afterwards the counters
must say every event was received once, none as a duplicate, and each event taken must hold
its `{prefix}:event:*` key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
from redis import Redis

from bench.cluster import CODEPROV, stop
from bench.common import (
    RESULTS_DIR,
    Target,
    describe_machine,
    machine,
    percentile,
    print_targets,
    write_results,
)
from bench.loadgen import Fired, closed_loop, open_loop
from bench.signed_events import PREFIX, SignedEvents, seed_waiting_stays
from worker.localredis import LocalRedis, free_port

RESULTS = RESULTS_DIR / "receiver.json"
RATE_TARGET = 2000.0
P99_TARGET_MS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="saturation events [20000]")
    parser.add_argument("--concurrency", type=int, default=16, help="connections [16]")
    parser.add_argument("--rates", default="1000,2000", help="offered rates, /s [1000,2000]")
    parser.add_argument("--seconds", type=float, default=5.0, help="per offered rate, s [5]")
    parser.add_argument("--warmup", type=int, default=1000, help="events before measuring [1000]")
    parser.add_argument("--stays", type=int, default=1000, help="waiting stays [1000]")
    parser.add_argument("--indexed", type=float, default=0.1,
                        help="share of events about a waiting stay's code [0.1]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    own, load = cores[0], cores[-1]  # one core: everything shares it (said in the config)
    server = LocalRedis().start()
    assert server.process is not None
    os.sched_setaffinity(server.process.pid, {load})
    mine = os.sched_getaffinity(0)
    try:
        info = machine(server.url)
        print(f"machine: {describe_machine(info)}", flush=True)
        os.sched_setaffinity(0, {load})
        with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
            results = _measure(args, server, own, Path(tmp))
    finally:
        os.sched_setaffinity(0, mine)  # `python -m bench` runs the next benchmark in this process
        server.cleanup()
    targets = _targets(results)
    print()
    print_targets(targets)
    config = {**vars(args), "receiver_core": own, "load_core": load, "cores": len(cores),
              **_server_stack()}
    write_results("receiver", args.out, info, config, results, targets)
    return 0


@dataclass(frozen=True)
class Shot:
    """One phase's figures."""

    name: str
    requests: int
    errors: int  # answers other than 200, and broken connections
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_receiver: float  # cores, over the phase
    cpu_generator: float
    cpu_redis: float
    cpu_others: float  # every other process of the machine: > 0.1 and the figures are shared
    offered_per_s: float | None = None
    generator_late_p99_ms: float | None = None  # open loop: the generator's own lag, p99


class Meters:
    """CPU seconds of the receiver, of this process, of Redis and of everything else running.

    The last one says whether the figures are the receiver's: on a shared machine another
    process on the receiver's core takes its time (and shows as its tail latency).
    """

    def __init__(self, receiver: int, redis: int) -> None:
        self.procs = [psutil.Process(receiver), psutil.Process(redis)]

    def read(self) -> tuple[float, float, float, float]:
        receiver, redis = (sum(p.cpu_times()[:2]) for p in self.procs)
        mine = time.process_time()
        every = psutil.cpu_times()
        busy = sum(every) - every.idle - getattr(every, "iowait", 0.0)
        return receiver, mine, redis, busy - receiver - mine - redis


def _measure(args: argparse.Namespace, server: LocalRedis, core: int, tmp: Path) -> dict[str, Any]:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with Redis.from_url(server.url) as redis:
        codes = seed_waiting_stays(redis, args.stays)
    port = free_port()
    with _receiver(server.url, secret, port, core, tmp / "receiver.log") as pid:
        assert server.process is not None
        meters = Meters(pid, server.process.pid)
        events = SignedEvents(secret, port, codes, args.indexed)
        shots: list[Shot] = []

        def phase(name: str, requests: list[bytes], go: Callable[..., Any],
                  offered: float | None = None) -> None:
            before, start = meters.read(), time.monotonic()
            fired = asyncio.run(go(port, requests))
            wall = time.monotonic() - start
            after = meters.read()
            used = [(b - a) / wall for a, b in zip(before, after, strict=True)]
            shots.append(_shot(name, fired, wall, used, offered))
            print(_row(shots[-1]), flush=True)

        phase("warmup", events.signed(args.warmup), _closed(args.concurrency))
        health = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        phase("baseline_healthz", [health] * args.events, _closed(args.concurrency))
        phase("saturation", events.signed(args.events), _closed(args.concurrency))
        for rate in (float(r) for r in args.rates.split(",")):
            count = max(1, int(rate * args.seconds))
            phase(f"offered_{rate:g}", events.signed(count), _open(rate), offered=rate)
        with Redis.from_url(server.url) as redis:
            check = _check(redis, events.sent)
    by_name = {s.name: s for s in shots}
    saturation, baseline = by_name["saturation"], by_name["baseline_healthz"]
    return {
        "phases": [asdict(s) for s in shots],
        "events_per_s": saturation.per_s,
        "baseline_healthz_per_s": baseline.per_s,
        "ratio_to_healthz": round(saturation.per_s / baseline.per_s, 3),
        # The receiver's CPU per request: what one core would do with nothing else on it.
        "cpu_us_per_event": _cpu_us(saturation),
        "cpu_us_per_healthz": _cpu_us(baseline),
        "errors": sum(s.errors for s in shots),
        **check,
    }


def _server_stack() -> dict[str, str]:
    """What uvicorn's `auto` picks in this environment: its HTTP parser and event loop."""
    def have(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {"receiver_http": "httptools" if have("httptools") else "h11",
            "receiver_loop": "uvloop" if have("uvloop") else "asyncio"}


def _cpu_us(shot: Shot) -> float:
    return round(shot.cpu_receiver / shot.per_s * 1e6, 1) if shot.per_s else math.nan


def _closed(concurrency: int) -> Callable[[int, list[bytes]], Any]:
    return lambda port, requests: closed_loop(port, requests, concurrency)


def _open(rate: float) -> Callable[[int, list[bytes]], Any]:
    return lambda port, requests: open_loop(port, requests, rate)


def _shot(name: str, fired: Fired, wall: float, cpu: Sequence[float],
          offered: float | None) -> Shot:
    ms = [x * 1000 for x in fired.latencies]
    late = percentile([x * 1000 for x in fired.late], 99) if fired.late else None
    return Shot(
        name=name, requests=len(ms), errors=fired.errors, seconds=round(wall, 3),
        per_s=round(len(ms) / wall, 1), p50_ms=round(percentile(ms, 50), 2),
        p99_ms=round(percentile(ms, 99), 2), max_ms=round(max(ms, default=0), 2),
        cpu_receiver=round(cpu[0], 2), cpu_generator=round(cpu[1], 2),
        cpu_redis=round(cpu[2], 2), cpu_others=round(max(cpu[3], 0.0), 2), offered_per_s=offered,
        generator_late_p99_ms=None if late is None else round(late, 2),
    )


@contextmanager
def _receiver(redis_url: str, secret: str, port: int, core: int, log: Path) -> Iterator[int]:
    """`codeprov webhook` pinned to `core`, once /healthz answers: its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    env.update(REDIS_URL=redis_url, SEAM_WEBHOOK_SECRET=secret, CODEPROV_LOG_FORMAT="json")
    command = [CODEPROV, "webhook", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = psutil.Popen(command, env=env, stdout=out, stderr=out)
    os.sched_setaffinity(proc.pid, {core})  # before its interpreter has started any thread
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"codeprov webhook did not start: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield int(proc.pid)
    finally:
        stop([proc])


def _check(redis: Redis, sent: int) -> dict[str, Any]:
    """Every event sent reached Redis once: counted `received`, none taken for a duplicate, each
    given one outcome, and every event that was `taken` kept as seen (its de-dup key).

    Whether an event about a code of no stay is kept as seen is the receiver's choice (one that
    came before its stay's commit must be taken when sent again), so those keys are not required.
    """
    keys = sum(1 for _ in redis.scan_iter(f"{PREFIX}:event:*", count=1000))
    raw: dict[bytes, bytes] = redis.hgetall(f"{PREFIX}:events:counts")  # type: ignore[assignment]
    counts = {k.decode(): int(v) for k, v in sorted(raw.items())}
    outcomes = sum(counts.get(k, 0) for k in ("taken", "ignored_unmanaged", "ignored_type"))
    lost = (abs(sent - counts.get("received", 0)) + counts.get("duplicate", 0)
            + abs(sent - outcomes) + max(0, counts.get("taken", 0) - keys))
    due = redis.zcount(f"{PREFIX}:queue", 0, time.time() * 1000)
    return {"events_sent": sent, "dedup_keys": keys, "lost": lost, "counts": counts,
            "checks_due_now": due}


def _row(p: Shot) -> str:
    offered = (f" offered {p.offered_per_s:g}/s (sent late p99 {p.generator_late_p99_ms} ms)"
               if p.offered_per_s else "")
    return (f"  {p.name:18} {p.requests:6} req {p.per_s:8.1f}/s{offered}  p50 {p.p50_ms:.2f} ms "
            f"p99 {p.p99_ms:.2f} ms  errors {p.errors}  cpu: receiver {p.cpu_receiver:.2f} "
            f"generator {p.cpu_generator:.2f} redis {p.cpu_redis:.2f} others {p.cpu_others:.2f}")


def _targets(r: dict[str, Any]) -> list[Target]:
    phases = {p["name"]: p for p in r["phases"]}
    at, sat = phases.get(f"offered_{RATE_TARGET:g}"), phases["saturation"]
    faults = r["errors"] + r["lost"]
    return [
        Target("receiver: verified events/s, one core", r["events_per_s"], "/s",
               f">= {RATE_TARGET:g}", r["events_per_s"] >= RATE_TARGET,
               f"GET /healthz {r['baseline_healthz_per_s']:g}/s, ratio "
               f"{r['ratio_to_healthz']:g}; receiver {r['cpu_us_per_event']:g} us CPU per "
               f"event; CPU receiver {sat['cpu_receiver']:g}, generator {sat['cpu_generator']:g}"
               f", redis {sat['cpu_redis']:g}, others {sat['cpu_others']:g}"),
        Target("receiver: p99 latency at 2,000 events/s offered",
               None if at is None else at["p99_ms"], "ms", f"< {P99_TARGET_MS:g} ms",
               None if at is None else at["p99_ms"] < P99_TARGET_MS,
               "" if at is None else f"p50 {at['p50_ms']:g} ms; at saturation p50 "
               f"{sat['p50_ms']:g} ms, p99 {sat['p99_ms']:g} ms"),
        Target("receiver: errors (non-200 answers, events lost)", faults, "", "= 0",
               faults == 0, f"{r['counts'].get('received', 0)} received of "
               f"{r['events_sent']} sent, {r['counts'].get('taken', 0)} taken, "
               f"{r['dedup_keys']} de-dup keys"),
    ]
