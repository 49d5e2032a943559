"""`python -m bench report`: issue 8's targets, met or missed, from the latest results files.

`python -m bench` runs it last, so one command ends with one table: the machine and date, each
target with this run's figure and verdict (notes carry the baselines and the alternatives
measured), then the rate-limit figures of `bench ratelimit`. Also written to summary.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Target, cpu_model, describe_machine, print_targets
from worker.localredis import redis_server_binary

PARTS = ("pipeline", "overhead", "footprint", "events", "guarded", "receiver")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help="folder of the results files [bench/results]")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "summary.json",
                        help="JSON summary file")


def run(args: argparse.Namespace) -> int:
    found = {name: _load(args.results / f"{name}.json") for name in (*PARTS, "ratelimit")}
    runs = {name: body for name, body in found.items() if body is not None}
    machine = next((b["machine"] for b in runs.values() if "machine" in b), None)
    print(f"machine: {describe_machine(machine) if machine else _fallback_machine()}")
    for name in PARTS:
        if name in runs:
            print(f"  {name}: run {runs[name]['machine']['date']}")
        else:
            print(f"  {name}: no results (python -m bench {name})")
    targets = [Target(**t) for name in PARTS if name in runs for t in runs[name]["targets"]]
    print()
    print_targets(targets)
    limits = _ratelimit_rows(runs.get("ratelimit"))
    if limits:
        print("\n  rate limits (bench ratelimit; R = the budget; max 1-s window/R, 429s):")
        for line in limits:
            print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine, "dates": {n: b.get("machine", {}).get("date") for n, b in runs.items()},
        "targets": [t.__dict__ for t in targets], "ratelimit": limits,
    }, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    return 0  # a missed target is a finding to report, not a failed run


def _load(path: Path) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return body


def _fallback_machine() -> str:
    return f"{cpu_model()} (redis-server: {redis_server_binary()})"


def _ratelimit_rows(body: dict[str, Any] | None) -> list[str]:
    if body is None:
        return []
    by_workers: dict[int, dict[str, Any]] = {}
    for r in body.get("runs", []):
        by_workers.setdefault(r["workers"], {})[r["impl"]] = r
    rows = []
    for workers, impls in sorted(by_workers.items()):
        cells = [f"{impl} {r['max_window_over_r']:.2f} ({r['rate_limited']} 429s, "
                 f"utilisation {r['utilisation']:.2f})" for impl, r in sorted(impls.items())]
        rows.append(f"  {workers} workers: " + "; ".join(cells))
    return rows
