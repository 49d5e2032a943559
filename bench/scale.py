"""`python -m bench scale`: throughput with 1, 2 and 4 worker processes, then under a budget.

Two series on the same backlog (a fresh sandbox and Redis each run, reusing the rate-limit
benchmark's harness): with a budget far above what the workers can send, Seam requests per
second show how codeprov scales with processes on this machine; with a budget R that binds,
they show the plateau at R and that it is never exceeded (max 1-s window / R).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.cluster import ROOT
from bench.ratelimit import _one_run
from worker.localredis import LocalRedis

RESULTS = ROOT / "bench" / "results" / "scale.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", default="1,2,4", help="worker counts [1,2,4]")
    parser.add_argument("--free-rate", type=float, default=2000, help="a budget that never binds")
    parser.add_argument("--bound-rate", type=float, default=20, help="a budget that binds [20]")
    parser.add_argument("--stays", type=int, default=3000, help="backlog of stays [3000]")
    parser.add_argument("--devices", type=int, default=300, help="devices [300]")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds [10]")
    parser.add_argument("--warmup", type=float, default=2, help="seconds not measured [2]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")


def _series(args: argparse.Namespace, url: str, rate: float) -> list[dict[str, Any]]:
    ns = argparse.Namespace(
        rate=rate, stays=args.stays, devices=args.devices, duration=args.duration,
        warmup=args.warmup, burst=max(1, int(rate // 20)), seam_rate=rate * 10,
        sandbox_burst=max(2, int(rate)), impl="codeprov", out=args.out,
    )
    rows = []
    for workers in [int(n) for n in args.workers.split(",")]:
        r = _one_run(ns, url, "codeprov", workers)
        rows.append({"workers": workers, "budget": rate,
                     "requests_per_s": round(r.utilisation * rate, 1),
                     "max_window_over_budget": r.max_window_over_r,
                     "rate_limited": r.rate_limited, "backlog_ran_dry": r.backlog_ran_dry})
        print(_row(rows[-1], rows[0]), flush=True)
    return rows


def _row(row: dict[str, Any], first: dict[str, Any]) -> str:
    speedup = row["requests_per_s"] / first["requests_per_s"] if first["requests_per_s"] else 0
    return (f"{row['workers']:>7}  {row['budget']:>8.0f}  {row['requests_per_s']:>12.1f}  "
            f"{speedup:>8.2f}x  {row['max_window_over_budget']:>13.2f}  {row['rate_limited']:>5}")


def run(args: argparse.Namespace) -> int:
    server = LocalRedis().start()
    print(f"{'workers':>7}  {'budget':>8}  {'requests/s':>12}  {'vs 1':>9}  "
          f"{'max 1-s/budget':>13}  {'429s':>5}", flush=True)
    try:
        free = _series(args, server.url, args.free_rate)
        bound = _series(args, server.url, args.bound_rate)
    finally:
        server.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"unbound": free, "bound": bound}, indent=2))
    print(f"\nJSON: {args.out}")
    return 0
