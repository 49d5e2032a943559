"""`codeprov demo`: workers, a private Redis and the sandbox, end to end, in under a minute."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from jobs.enqueue import enqueue_stay
from jobs.state import StayState, StayStore
from seam_sandbox import DeviceSpec, Fault, Latency, Sandbox, SandboxClock, Scenario
from worker.localredis import LocalRedis
from worker.logs import configure, mask_pin
from worker.queue import connect
from worker.runtime import make_worker
from worker.settings import Settings, mask_url

TIME_LIMIT = 55.0
PREFIX = "codeprov-demo"


def demo_scenario(locks: int = 8) -> Scenario:
    """Healthy locks, plus one that goes offline for a while, one slow to set, one full."""
    faults: dict[int, list[Fault]] = {
        1: [Fault(kind="device_offline", start=2, duration=6)],
        2: [Fault(kind="delay_in_setting_on_device", start=0, duration=5)],
        3: [Fault(kind="failed_to_set_on_device", start=0, duration=4)],
        4: [Fault(kind="no_space_for_access_code_on_device", start=0, count=1)],
    }
    return Scenario(
        devices=[
            DeviceSpec(
                id=f"demo_lock_{i}",
                name=f"Front door, unit {i}",
                latency=Latency.lognormal(median=2.0, sigma=0.4),
                faults=faults.get(i, []),
            )
            for i in range(1, locks + 1)
        ]
    )


def run_demo(stays: int = 36, workers: int = 3) -> int:
    return asyncio.run(_demo(stays, workers))


async def _demo(stays: int, workers: int) -> int:
    # Only a Redis it was told to use, or its own: never whatever answers on localhost:6379,
    # which may be a real deployment's (the demo deletes its own keys there first).
    private: LocalRedis | None = None
    url = os.environ.get("REDIS_URL")
    if not url:
        private = LocalRedis().start()
        url = private.url
    try:
        return await _run(url, stays, workers, private is not None)
    finally:
        if private:
            private.cleanup()


async def _run(url: str, n_stays: int, n_workers: int, private: bool) -> int:
    sandbox = Sandbox(demo_scenario(), seed=7, clock=SandboxClock(speed=1.0))
    settings = Settings(
        redis_url=url,
        seam_api_key=sandbox.api_key,
        seam_endpoint="http://sandbox.local",
        key_prefix=PREFIX,
        queue_name=f"{PREFIX}:queue",  # not CODEPROV_QUEUE_NAME's: the demo's own queue
        rate_per_second=25,
        rate_burst=5,
        poll_initial=1.0,
        poll_max=3.0,
        max_jobs=10,
    )
    log_path = Path(tempfile.gettempdir()) / "codeprov-demo.log"
    with log_path.open("w") as log_file:
        configure(fmt="json", level="info", secrets=[sandbox.api_key], stream=log_file)
        where = "a private redis-server" if private else mask_url(url)
        print(
            f"codeprov demo: {n_stays} stays on {len(sandbox.device_ids)} locks, "
            f"{n_workers} workers, Redis: {where}, Seam: the sandbox (in-process)"
        )
        pool = await connect(settings)
        try:
            await _clear(pool)
            booking_ids = await _enqueue(pool, sandbox, n_stays)
            ok = await _work(settings, sandbox, pool, booking_ids, n_workers)
            states = [await StayStore(pool, PREFIX).get(b) for b in booking_ids]
        finally:
            await pool.aclose()
    _table([s for s in states if s is not None])
    _events(log_path)
    return 0 if ok else 1


async def _clear(pool: Any) -> None:
    async for key in pool.scan_iter(match=f"{PREFIX}:*"):
        await pool.delete(key)


async def _enqueue(pool: Any, sandbox: Sandbox, n: int) -> list[str]:
    now = sandbox.clock.now()
    ids = []
    for i in range(n):
        lock = sandbox.device_ids[i % len(sandbox.device_ids)]
        starts = now + timedelta(hours=2 + i)
        stay = {
            "booking_id": f"demo-{i + 1:03}",
            "device_id": lock,
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(days=2)).isoformat(),
        }
        result = await enqueue_stay(pool, stay, prefix=PREFIX, now=now)
        ids.append(stay["booking_id"])
        assert result.result == "enqueued", result
    return ids


async def _work(settings: Settings, sandbox: Sandbox, pool: Any, ids: list[str], n: int) -> bool:
    ws = [
        make_worker(
            settings,
            poll_delay=0.05,
            handle_signals=False,
            clock=sandbox.clock.now,
            seam_transport=httpx.ASGITransport(app=sandbox.app),
        )
        for _ in range(n)
    ]
    tasks = [asyncio.create_task(w.async_run()) for w in ws]
    store, start, done = StayStore(pool, PREFIX), time.monotonic(), False
    try:
        while time.monotonic() - start < TIME_LIMIT:
            states = [await store.get(b) for b in ids]
            counts = Counter(s.state.value for s in states if s is not None)
            _progress(time.monotonic() - start, counts)
            if sum(counts[k] for k in ("scheduled", "failed")) == len(ids):
                done = True
                break
            await asyncio.sleep(0.5)
    finally:
        print()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in ws:
            await w.close()
    if not done:
        print(f"codeprov demo: not every stay finished within {TIME_LIMIT:.0f}s", file=sys.stderr)
    return done


def _progress(elapsed: float, counts: Counter[str]) -> None:
    order = ("queued", "provisioning", "waiting_for_device", "scheduled", "failed")
    line = f"{elapsed:5.1f}s  " + "  ".join(f"{k} {counts[k]:>2}" for k in order)
    end = "\r" if sys.stdout.isatty() else "\n"
    print(line, end=end, flush=True)


def _table(states: list[StayState]) -> None:
    print(f"\n{'booking':10} {'lock':12} {'state':19} {'PIN':8} {'checks':>6}  reason")
    for s in states:
        reason = s.failure.reason if s.failure else ""
        pin = mask_pin(s.code) if s.state.value == "scheduled" else ""
        print(
            f"{s.booking_id:10} {s.stay.device_id:12} {s.state.value:19} {pin or '':8} "
            f"{s.checks:>6}  {reason}"
        )
    counts = Counter(s.state.value for s in states)
    print("\n" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def _events(log_path: Path) -> None:
    counts: Counter[str] = Counter()
    for line in log_path.read_text().splitlines():
        try:
            event = json.loads(line).get("event", "")
        except ValueError:
            continue
        if event.startswith(("access_code.", "provisioning.", "seam.")):
            counts[event] += 1
    print("log events: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    print(f"JSON logs: {log_path}")
