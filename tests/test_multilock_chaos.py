"""Chaos on multi-lock stays: worker processes SIGKILLed while stays of 2-3 locks are provisioned.

As tests/test_chaos.py: a private redis-server, `codeprov sandbox` on loopback (12 locks, lost
answers to creates, one lock answering one 409), `codeprov enqueue --file`, and three
`codeprov worker`s; a seeded RNG SIGKILLs one worker every 1-2 s and starts another in its
place, then the survivors converge. Each stay's record runs its first lock and each further
lock has a record of its own (jobs/group.py): a kill can land between the first lock's PIN and
a part's create, or between a record's commit and the group's outcome.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from test_chaos import Cluster, held_at_death, wait_until

from bench.cluster import Served, enqueue, serve_sandbox, stop, worker_env
from jobs.state import StayState, StayStore, part_id
from jobs.status import read_status
from worker.localredis import LocalRedis
from worker.queue import connect
from worker.settings import Settings

STAYS, LOCKS, WORKERS, SEED = 36, 12, 3, 11
KILLING_FOR = 12.0
CONVERGE_WITHIN = 35.0
REFUSING = "lock-01"  # its first create answers 409: that stay's lock gets a PIN of its own
DEVICES: list[dict[str, Any]] = [
    {"id": f"lock-{n:02}", "latency": {"kind": "lognormal", "median": 1.0, "sigma": 0.5}}
    for n in range(LOCKS)
]
DEVICES[1]["faults"] = [{"kind": "duplicate_access_code", "count": 1}]
SCENARIO = {
    "devices": DEVICES,
    "rate_limits": {"per_device": False},
    "drops": [  # not on /access_codes/list: the test reads the locks through it
        {"probability": 0.15, "routes": ["/access_codes/create"], "when": "after"},
        {"probability": 0.02, "when": "before",
         "routes": ["/access_codes/create", "/access_codes/get", "/access_codes/generate_code"]},
    ],
}
# 30 requests/s for all workers: the run's ~300 requests span the kill phase.
SETTINGS = dict(
    job_timeout=4.0, http_timeout=1.0, poll_initial=0.3, poll_max=1.0,
    transient_backoff_max=2.0, rate_per_second=30, rate_burst=10,
    device_creates_per_minute=6000, shutdown_wait=2, log_format="json", log_level="debug",
)


def multi_stays(device_ids: list[str]) -> list[dict[str, Any]]:
    """STAYS stays starting tomorrow, alternately of 2 and 3 neighbouring locks."""
    starts = datetime.now(UTC) + timedelta(days=1)
    return [
        {"booking_id": f"ml-{i:03}",
         "device_ids": [device_ids[(i + k) % len(device_ids)] for k in range(2 + i % 2)],
         "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=2)).isoformat()}
        for i in range(STAYS)
    ]


def codes_on_locks(served: Served) -> dict[str, list[dict[str, Any]]]:
    """Every live code on every lock, as the sandbox's /access_codes/list answers it."""
    auth = {"authorization": f"Bearer {served.api_key}"}
    out = {}
    with httpx.Client(base_url=served.endpoint, headers=auth, timeout=5) as client:
        for device in served.device_ids:
            answer = client.post("/access_codes/list", json={"device_id": device, "limit": 1000})
            answer.raise_for_status()
            out[device] = answer.json()["access_codes"]
    return out


async def _statuses(url: str, booking_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    settings = Settings(redis_url=url)
    return {b: await read_status(settings, b) for b in booking_ids}


def statuses(url: str, booking_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """`status --json` of each stay (jobs.status.read_status, as the CLI reads it)."""
    return asyncio.run(_statuses(url, booking_ids))


async def _records(url: str, stays: list[dict[str, Any]]) -> dict[str, list[StayState | None]]:
    pool = await connect(Settings(redis_url=url))
    try:
        store = StayStore(pool)
        return {s["booking_id"]: [await store.get(s["booking_id"])] + [
            await store.get(part_id(s["booking_id"], lock)) for lock in s["device_ids"][1:]]
            for s in stays}
    finally:
        await pool.aclose()


def records(url: str, stays: list[dict[str, Any]]) -> dict[str, list[StayState | None]]:
    """Each stay's records in its locks' order: the booking's, then one per further lock."""
    return asyncio.run(_records(url, stays))


def results_by_stay(url: str) -> dict[str, list[str]]:
    """The states of each stay's results entries, in order."""
    with Redis.from_url(url) as client:
        entries = client.xrange("codeprov:results")
    out: dict[str, list[str]] = {}
    for _, fields in entries:
        out.setdefault(fields[b"booking_id"].decode(), []).append(fields[b"state"].decode())
    return out


def all_scheduled(url: str, booking_ids: list[str]) -> bool:
    found = statuses(url, booking_ids)
    return all(v is not None and v["state"] == "scheduled" for v in found.values())


def kill_repeatedly(cluster: Cluster, rng: random.Random) -> int:
    """Start the workers, then SIGKILL one every 1-2 s for KILLING_FOR s; how many were."""
    for _ in range(WORKERS):
        cluster.spawn()
    stop_at, kills = time.monotonic() + KILLING_FOR, 0
    while (pause := rng.uniform(1.0, 2.0)) < stop_at - time.monotonic():
        time.sleep(pause)
        cluster.kill_one(rng)
        kills += 1
        cluster.spawn()
    return kills


def pins_by_stay(codes: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[str]]]:
    """stay -> lock -> the PINs of the stay's live codes on that lock (named `Stay <id>`)."""
    out: dict[str, dict[str, list[str]]] = {}
    for device, found in codes.items():
        for code in found:
            booking = str(code["name"]).removeprefix("Stay ")
            out.setdefault(booking, {}).setdefault(device, []).append(str(code["code"]))
    return out


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_sigkilled_workers_leave_one_code_per_lock_one_pin_one_outcome(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Workers SIGKILLed every 1-2 s over stays of 2-3 locks: each stay ends scheduled with
    exactly one code per lock, one PIN on its locks (unless a lock refused it), and one
    `scheduled` results entry."""
    server, cluster = LocalRedis().start(), Cluster({}, tmp_path)
    try:
        with serve_sandbox(SCENARIO, tmp_path, seed=SEED) as served:
            cluster.env = worker_env(server.url, served, **SETTINGS) | {"PYTHONUNBUFFERED": "1"}
            stays = multi_stays(served.device_ids)
            ids = [s["booking_id"] for s in stays]
            enqueue(stays, cluster.env, tmp_path)
            kills = kill_repeatedly(cluster, random.Random(SEED))
            wait_until(lambda: all_scheduled(server.url, ids), CONVERGE_WITHIN)
            views, recs = statuses(server.url, ids), records(server.url, stays)
            codes, stats = codes_on_locks(served), served.stats()
            told = results_by_stay(server.url)
    finally:
        stop([i.process for i in cluster.alive], timeout=10)
        server.cleanup()
    pins = pins_by_stay(codes)
    refused = {b for b, rs in recs.items() if any(r is not None and r.pin_conflicts for r in rs)}
    held = sum(len(held_at_death(victim)) for victim in cluster.dead)
    figures = {"stays": STAYS, "codes": stats["codes_created_total"], "kills": kills,
               "jobs_held_by_killed_workers": held, "refused": len(refused),
               "requests": stats["requests"]}
    print("\nmulti-lock chaos figures:", json.dumps(figures))
    for name, value in figures.items():
        record_property(name, value)

    assert {b: v["state"] if v else None for b, v in views.items()} == dict.fromkeys(
        ids, "scheduled")
    assert stats["duplicate_names"] == {}
    assert {b: sorted(p) for b, p in pins.items()} == {
        s["booking_id"]: sorted(s["device_ids"]) for s in stays}  # one code on each lock
    assert all(len(p) == 1 for per in pins.values() for p in per.values())
    shared = {b for b, per in pins.items() if len({p[0] for p in per.values()}) == 1}
    assert set(ids) - shared <= refused, {b: pins[b] for b in set(ids) - shared - refused}
    assert told == {b: ["scheduled"] for b in ids}
    assert stats["codes_created_total"] == sum(len(s["device_ids"]) for s in stays)
    assert Counter(r.state.value for rs in recs.values() for r in rs if r) == Counter(
        {"scheduled": sum(len(s["device_ids"]) for s in stays)})
    assert kills >= 5 and held > 0  # the kills cut jobs mid-run
