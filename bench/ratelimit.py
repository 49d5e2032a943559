"""`python -m bench ratelimit`: one shared budget across 1-8 worker processes, against a baseline.

For each implementation and each worker count, on a fresh sandbox and a flushed Redis: start N
worker processes, enqueue a backlog once they are up, measure `--duration` seconds after a
warm-up, stop them. The sandbox's per-key token bucket allows R requests/s (`--seam-rate`) with
a small burst (`--sandbox-burst`), so going over R costs 429s (with Retry-After).

- codeprov: `codeprov worker`, the limiter shared through Redis (GCRA on Redis time).
- per-process: `python -m bench.local_worker`, the same worker with a limiter per process, each
  set to R: what Celery-style per-worker limits do.

Reported per run: the most requests the sandbox saw in any 1-second window over the whole run,
divided by R; utilisation, the 2xx answers per second over the measured window divided by R;
sent/R, every request (429s too) per second over the window, divided by R; the 429s of the
whole run and of the window. The backlog is sized so workers never run dry
(`backlog_ran_dry` says if due work ever ran out during the window).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from bench.cluster import (
    CODEPROV,
    ROOT,
    Served,
    enqueue,
    serve_sandbox,
    start_workers,
    stays,
    stop,
    wait_started,
)
from bench.cluster import worker_env as base_env
from worker.localredis import LocalRedis

COMMANDS = {
    "codeprov": [CODEPROV, "worker"],
    "per-process": [sys.executable, "-m", "bench.local_worker"],
}
RESULTS = ROOT / "bench" / "results" / "ratelimit.json"
QUEUE = "codeprov:queue"


@dataclass(frozen=True)
class Run:
    impl: str
    workers: int
    max_window: int
    max_window_over_r: float
    utilisation: float
    sent_over_r: float
    rate_limited: int
    rate_limited_in_window: int
    window_s: float
    backlog_ran_dry: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=20, help="budget R, requests/s [20]")
    parser.add_argument("--stays", type=int, default=400, help="backlog of stays [400]")
    parser.add_argument("--devices", type=int, default=100, help="devices they spread over [100]")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts [1,2,4,8]")
    parser.add_argument("--duration", type=float, default=15, help="measured seconds [15]")
    parser.add_argument("--warmup", type=float, default=2, help="seconds not measured [2]")
    parser.add_argument("--burst", type=int, default=1,
                        help="our burst, CODEPROV_RATE_BURST, for both limiters [1]")
    parser.add_argument("--seam-rate", type=float, default=None,
                        help="the sandbox's per-key limit, requests/s [R]")
    parser.add_argument("--sandbox-burst", type=int, default=2,
                        help="burst of the sandbox's per-key bucket, 1..R [2]")
    parser.add_argument("--impl", default="codeprov,per-process", help="implementations to run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def run(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.workers.split(",")]
    impls = args.impl.split(",")
    server = LocalRedis().start()
    runs: list[Run] = []
    print(HEADER, flush=True)
    try:
        for workers in counts:
            for impl in impls:
                result = _one_run(args, server.url, impl, workers)
                print(_row(result), flush=True)
                runs.append(result)
    finally:
        server.cleanup()
    _write(args, runs)
    print(f"\nJSON: {args.out}")
    return 0


def _one_run(args: argparse.Namespace, redis_url: str, impl: str, workers: int) -> Run:
    with Redis.from_url(redis_url) as redis:
        redis.flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp:
        directory = Path(tmp)
        with serve_sandbox(_scenario(args), directory) as served:
            env = _env(args, redis_url, served)
            processes = start_workers(workers, COMMANDS[impl], env, directory)
            try:
                # Backlog after start-up: N Python processes importing at once on a small machine
                # delay each other's first requests by tens of ms, which is not what is measured.
                wait_started(processes, directory)
                enqueue(stays(args.stays, served.device_ids), env, directory)
                window = _measure(served, redis_url, args.warmup, args.duration)
            finally:
                stop(processes)
            final = served.stats()
    r = args.rate
    return Run(
        impl=impl, workers=workers,
        max_window=final["max_requests_per_second"],
        max_window_over_r=round(final["max_requests_per_second"] / r, 3),
        utilisation=round(window["ok"] / window["seconds"] / r, 3),
        sent_over_r=round(window["sent"] / window["seconds"] / r, 3),
        rate_limited=final["rate_limited"],
        rate_limited_in_window=window["rate_limited"],
        window_s=round(window["seconds"], 2),
        backlog_ran_dry=window["ran_dry"],
    )


def _scenario(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "device_count": args.devices,
        "device_defaults": {"latency": {"kind": "fixed", "seconds": 0.5}},
        "rate_limits": {"per_device": False, "per_key_rps": args.seam_rate or args.rate,
                        "per_key_burst": args.sandbox_burst, "retry_after": True},
    }


def _env(args: argparse.Namespace, redis_url: str, served: Served) -> dict[str, str]:
    return base_env(
        redis_url, served,
        rate_per_second=args.rate, rate_burst=args.burst, device_creates_per_minute=6000,
        poll_initial=1.0, poll_max=5.0, shutdown_wait=0, log_level="warning", log_format="json",
    )


def _measure(served: Served, redis_url: str, warmup: float, duration: float) -> dict[str, Any]:
    """Counts over [first request + warmup, + duration], and whether due work ever ran out."""
    first = _wait_for_first_request(served)
    time.sleep(max(0.0, first + warmup - time.monotonic()))
    start_at, start = time.monotonic(), _counts(served)
    ran_dry = False
    with Redis.from_url(redis_url) as redis:
        while time.monotonic() < start_at + duration:
            # Due or in progress (arq keeps running jobs in the queue): work waiting for a token.
            ran_dry |= redis.zcount(QUEUE, "-inf", int(time.time() * 1000)) == 0
            time.sleep(0.2)
    end_at, end = time.monotonic(), _counts(served)
    return {"seconds": end_at - start_at, "ok": end["ok"] - start["ok"],
            "sent": end["sent"] - start["sent"],
            "rate_limited": end["rate_limited"] - start["rate_limited"], "ran_dry": ran_dry}


def _wait_for_first_request(served: Served, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.stats()["requests_total"] > 0:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError("no worker sent a request within a minute; see the worker logs")


def _counts(served: Served) -> dict[str, int]:
    stats = served.stats()
    ok = sum(int(n) for by in stats["requests"].values() for s, n in by.items() if s == "200")
    return {"ok": ok, "sent": stats["requests_total"], "rate_limited": stats["rate_limited"]}


HEADER = (f"{'workers':>7}  {'limiter':12}  {'max 1-s window/R':>16}  {'utilisation':>11}  "
          f"{'sent/R':>6}  {'429s':>5}  {'in window':>9}")


def _row(r: Run) -> str:
    dry = "  (backlog ran dry)" if r.backlog_ran_dry else ""
    return (f"{r.workers:>7}  {r.impl:12}  {r.max_window_over_r:>16.2f}  {r.utilisation:>11.2f}  "
            f"{r.sent_over_r:>6.2f}  {r.rate_limited:>5}  {r.rate_limited_in_window:>9}{dry}")


def _write(args: argparse.Namespace, runs: list[Run]) -> None:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
              if k not in ("func",)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "ratelimit", "config": config,
                                    "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
