"""Webhooks end to end: the sandbox delivers Svix-signed events over real HTTP on 127.0.0.1 to
our real receiver (`webhook_app` under uvicorn in-process, or `codeprov webhook` in a
subprocess), with Svix's faults (duplicated, dropped, late, out of order, an endpoint killed),
while real arq workers provision the stays against a real Redis.

The webhook is registered through the sandbox's `/webhooks/create`; its `whsec_` secret is the
one the receiver verifies with. Every test marks events flowing up front as the receiver does
(`Events.note_alive`), so waiting stays are looked at only every `safety_poll`: what schedules
them within the test is an event (or, in one test, the safety look itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from harness import Rig
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.events import Events, read_counts
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario
from seam_sandbox.scenario import Fault, WebhookFault
from worker.webhook import webhook_app

pytestmark = pytest.mark.anyio

PREFIX = "codeprov"
SCHEDULED_ON_DEVICE = "access_code.scheduled_on_device"
GET = "/access_codes/get"
# The log events that say a stay's code changed: each must be logged once per change.
TRANSITIONS = ("access_code.", "provisioning.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def locks(count: int, latency: float = 0.3, faults: list[list[Fault]] | None = None) -> Scenario:
    specs = [
        DeviceSpec(id=f"lock-{n}", latency=Latency.fixed(latency),
                   faults=(faults[n] if faults and n < len(faults) else []))
        for n in range(count)
    ]
    return Scenario(devices=specs)


async def register(rig: Rig, url: str) -> str:
    """Register `url` with the sandbox (all event types); its `whsec_` secret."""
    async with httpx.AsyncClient(transport=rig.transport(), base_url=rig.settings.seam_endpoint,
                                 headers={"authorization": f"Bearer {rig.sandbox.api_key}"}) as c:
        answer = await c.post("/webhooks/create", json={"url": url})
    assert answer.status_code == 200, answer.text
    secret: str = answer.json()["webhook"]["secret"]
    assert secret.startswith("whsec_")
    return secret


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own handlers
        yield


@contextlib.asynccontextmanager
async def receiving(rig: Rig) -> AsyncIterator[None]:
    """Our receiver (`webhook_app`) in-process on a free loopback port, registered with the
    sandbox, and the sandbox delivering to it in the background."""
    port = free_port()
    secret = await register(rig, f"http://127.0.0.1:{port}/webhooks/seam")
    settings = rig.settings.model_copy(update={"seam_webhook_secret": SecretStr(secret)})
    config = uvicorn.Config(webhook_app(rig.pool, settings), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off", access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "receiver did not start"
            await asyncio.sleep(0.01)
        async with rig.sandbox.delivering(interval=0.02):
            yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def flowing(rig: Rig) -> None:
    """Events flow, as the receiver says after a verified webhook (`{prefix}:events:flowing`)."""
    await Events(rig.pool, PREFIX, rig.settings.queue_name, rig.settings.events_alive
                 ).note_alive(webhook=True)


async def enqueue(rig: Rig, count: int, locks_: int) -> list[str]:
    ids = [f"B{n}" for n in range(count)]
    for n, booking in enumerate(ids):
        assert (await rig.enqueue(rig.stay(booking, device=n % locks_))).result == "enqueued"
    return ids


def all_scheduled(rig: Rig, ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        states = [await rig.state(b) for b in ids]
        return all(s.state is Phase.SCHEDULED for s in states) and rig.sandbox.pending_deliveries(
        ) == 0
    return done


def once_each(logs: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str]]:
    """(booking_id, event) of every transition log."""
    return Counter((str(e.get("booking_id")), str(e["event"])) for e in logs
                   if str(e["event"]).startswith(TRANSITIONS))


def gets(rig: Rig) -> int:
    return sum(rig.sandbox.stats()["requests"].get(GET, {}).values())


def ok(record: dict[str, Any]) -> bool:
    return isinstance(record["outcome"], int) and 200 <= record["outcome"] < 300


async def test_duplicate_deliveries_log_nothing_twice(redis: Redis, redis_url: str) -> None:
    """Every webhook delivered twice (the duplicated fault): each stay's transition logs
    (created, error/warning added and cleared, scheduled) appear exactly once, and the event
    counters count every second copy as a duplicate."""
    faults = [[Fault(kind="failed_to_set_on_device", start=0, duration=1.5)],
              [Fault(kind="delay_in_setting_on_device", start=0, duration=1.5)], []]
    scenario = locks(3, faults=faults).model_copy(
        update={"webhook_faults": [WebhookFault(kind="duplicated")]})
    async with Rig(redis_url, scenario, overrides={"events_poll": 0}) as rig:
        await flowing(rig)
        async with receiving(rig):
            ids = await enqueue(rig, 3, 3)
            with capture_logs() as logs:
                await rig.run_until(all_scheduled(rig, ids), timeout=20)
        seen = once_each(logs)
        assert set(seen.values()) == {1}, seen
        for booking, added in (("B0", "access_code.error.added"),
                               ("B1", "access_code.warning.added")):
            cleared = added.replace("added", "cleared")
            assert seen[(booking, added)] == seen[(booking, cleared)] == 1
        for booking in ids:
            assert seen[(booking, "access_code.scheduled")] == 1
            assert seen[(booking, "access_code.created")] == 1
        answered = Counter(r["event_id"] for r in rig.sandbox.deliveries() if ok(r))
        assert answered and set(answered.values()) == {2}  # every event came twice
        counts = await read_counts(redis, PREFIX)
        assert counts["received"] == sum(answered.values())
        assert counts["duplicate"] == len(answered)


async def test_dropped_webhook_is_caught_by_the_feed(redis: Redis, redis_url: str) -> None:
    """Every scheduled_on_device webhook dropped, the feed on: the stays still end scheduled,
    and each dropped event is recorded (by the feed: it was never delivered)."""
    drop = WebhookFault(kind="dropped", event_types=[SCHEDULED_ON_DEVICE])
    scenario = locks(2).model_copy(update={"webhook_faults": [drop]})
    overrides = {"events_poll": 0.5, "events_webhook_poll": 0.5}
    async with Rig(redis_url, scenario, overrides=overrides) as rig:
        await flowing(rig)
        async with receiving(rig):
            ids = await enqueue(rig, 2, 2)
            await rig.run_until(all_scheduled(rig, ids), timeout=20)
        dropped = [r for r in rig.sandbox.deliveries() if r["event_type"] == SCHEDULED_ON_DEVICE]
        assert len(dropped) == 2 and {r["outcome"] for r in dropped} == {"dropped"}
        codes = {(await rig.state(b)).access_code_id for b in ids}
        assert {e["access_code_id"] for e in rig.sandbox.events()
                if e["event_type"] == SCHEDULED_ON_DEVICE} == codes
        for record in dropped:
            assert await redis.exists(f"{PREFIX}:event:{record['event_id']}") == 1


async def test_dropped_webhook_without_feed_is_caught_by_the_safety_look(
    redis: Redis, redis_url: str
) -> None:
    """Feed off (events_poll 0), events flowing and the scheduled_on_device webhook dropped: the
    stay ends scheduled through its one safety look (safety_poll 2 s), a single `get`, and the
    dropped event is never recorded."""
    drop = WebhookFault(kind="dropped", event_types=[SCHEDULED_ON_DEVICE])
    scenario = locks(1).model_copy(update={"webhook_faults": [drop]})
    async with Rig(redis_url, scenario, overrides={"events_poll": 0, "safety_poll": 2.0}) as rig:
        await flowing(rig)
        async with receiving(rig):
            ids = await enqueue(rig, 1, 1)
            await rig.run_until(all_scheduled(rig, ids), timeout=20)
        dropped = [r for r in rig.sandbox.deliveries() if r["event_type"] == SCHEDULED_ON_DEVICE]
        assert [r["outcome"] for r in dropped] == ["dropped"]
        assert await redis.exists(f"{PREFIX}:event:{dropped[0]['event_id']}") == 0
        assert gets(rig) == 1


class CliReceiver:
    """`codeprov webhook --host 127.0.0.1 --port P` in a subprocess, as an operator runs it."""

    def __init__(self, redis_url: str, port: int, log: Path) -> None:
        self.redis_url, self.port, self.log = redis_url, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.secret = ""

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self.redis_url, "SEAM_WEBHOOK_SECRET": self.secret,
               "CODEPROV_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "webhook", "--host", "127.0.0.1",
                 "--port", str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)

    async def up(self) -> None:
        """Start it and wait for /healthz. A port another process grabbed between two starts
        (free_port only picked it) is retried a few times: this is about the test's port."""
        for _ in range(3):
            self.start()
            if await self._ready():
                return
            assert "address already in use" in self.log.read_text(), self.log.read_text()
            await asyncio.sleep(0.2)
        raise AssertionError(self.log.read_text())

    async def _ready(self) -> bool:
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    return False
                try:
                    answer = await client.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                    if answer.status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the receiver did not start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def test_receiver_killed_mid_burst_loses_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """A `codeprov webhook` SIGKILLed mid-burst: the deliveries it did not answer 2xx are
    retried on Svix's schedule and taken by a restarted receiver; every event the sandbox
    emitted is recorded once, and every stay ends scheduled."""
    cli = CliReceiver(redis_url, free_port(), tmp_path / "webhook.log")
    async with Rig(redis_url, locks(3, latency=1.0), overrides={"events_poll": 0}) as rig:
        cli.secret = await register(rig, f"http://127.0.0.1:{cli.port}/webhooks/seam")
        try:
            await cli.up()
            await flowing(rig)
            ids = await enqueue(rig, 9, 3)
            async with rig.sandbox.delivering(interval=0.02):
                await asyncio.gather(rig.run_until(all_scheduled(rig, ids), timeout=20),
                                     kill_and_restart(rig, cli))
        finally:
            cli.stop()
        failed = [r for r in rig.sandbox.deliveries() if not ok(r)]
        assert failed and {r["outcome"] for r in failed} == {"connection_error"}
        assert all(any(ok(r) and r["msg_id"] == f["msg_id"] for r in rig.sandbox.deliveries())
                   for f in failed)  # each failed delivery was taken on a retry
        emitted = {e["event_id"] for e in rig.sandbox.events()}
        recorded = {k.decode().rsplit(":", 1)[1] for k in await redis.keys(f"{PREFIX}:event:*")}
        assert recorded == emitted
        counts = await read_counts(redis, PREFIX)  # each event counted new once, resends dups
        assert counts["received"] - counts.get("duplicate", 0) == len(emitted), counts


async def kill_and_restart(rig: Rig, cli: CliReceiver) -> None:
    """SIGKILL the receiver after its 4th 2xx answer, restart it, then push the sandbox clock
    past each retry until nothing is left to deliver."""
    deadline = time.monotonic() + 15
    while sum(ok(r) for r in rig.sandbox.deliveries()) < 4:
        assert time.monotonic() < deadline, rig.sandbox.deliveries()
        await asyncio.sleep(0.005)
    cli.kill()
    # Wait for a delivery to fail against the dead receiver, then bring it back.
    while not any(r["outcome"] == "connection_error" for r in rig.sandbox.deliveries()):
        assert time.monotonic() < deadline, rig.sandbox.deliveries()
        await asyncio.sleep(0.01)
    await cli.up()
    while rig.sandbox.pending_deliveries():
        assert time.monotonic() < deadline, rig.sandbox.deliveries()
        rig.sandbox.clock.advance(60)  # 5 s, 5 min, 30 min...: Svix's retries come due
        await asyncio.sleep(0.05)


async def test_out_of_order_and_late_deliveries(redis: Redis, redis_url: str) -> None:
    """Deliveries shuffled in runs of 3 and every 2nd scheduled_on_device 3 s late: every stay
    ends scheduled and each of its transitions is logged once."""
    faults = [WebhookFault(kind="late", delay=3.0, event_types=[SCHEDULED_ON_DEVICE],
                           every_nth=2),
              WebhookFault(kind="out_of_order", window=3, hold=1.0)]
    scenario = locks(3).model_copy(update={"webhook_faults": faults})
    async with Rig(redis_url, scenario, overrides={"events_poll": 0}) as rig:
        await flowing(rig)
        async with receiving(rig):
            ids = await enqueue(rig, 6, 3)
            with capture_logs() as logs:
                await rig.run_until(all_scheduled(rig, ids), timeout=20)
        seen = once_each(logs)
        assert set(seen.values()) == {1}, seen
        assert all(seen[(b, "access_code.scheduled")] == 1 for b in ids)
        sent = [r for r in rig.sandbox.deliveries() if ok(r)]
        emitted = [e["event_id"] for e in rig.sandbox.events()]
        assert [r["event_id"] for r in sent] != emitted  # the faults did reorder them
        assert sorted(r["event_id"] for r in sent) == sorted(emitted)
