"""`codeprov webhook`: the receiver, run as an operator runs it (a subprocess on 127.0.0.1),
driven over real HTTP with bodies signed by the `svix` library, against a real Redis."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Rig, run_cli
from redis.asyncio import Redis
from svix.webhooks import Webhook

from jobs.events import read_counts
from jobs.state import Failure, Phase, StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.queue import job_id

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"codeprov-webhook-test-secret-32b").decode()
PIN = "834712"


@dataclass
class Receiver:
    url: str
    log: Path

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def receiver(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """One `codeprov webhook` for the module (each test's `redis` fixture wipes its data)."""
    port, log = free_port(), tmp_path_factory.mktemp("webhook") / "out.log"
    env = {**os.environ, "REDIS_URL": redis_url, "SEAM_WEBHOOK_SECRET": SECRET,
           "CODEPROV_LOG_LEVEL": "debug", "CODEPROV_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "webhook", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)
        yield Receiver(url, log)
    finally:
        proc.terminate()
        proc.wait(10)


def signed(
    body: str, *, msg_id: str = "msg_1", at: datetime | None = None, names: str = "svix"
) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        f"{names}-id": msg_id,
        f"{names}-timestamp": str(int(at.timestamp())),
        f"{names}-signature": Webhook(SECRET).sign(msg_id, at, body),
    }


def seam_event(event_id: str = "evt_1", **fields: Any) -> str:
    return json.dumps({
        "event_id": event_id, "event_type": "access_code.set_on_device", "workspace_id": "ws",
        "created_at": "2026-01-01T00:00:00Z", "occurred_at": "2026-01-01T00:00:00Z",
        "access_code_id": "ac_x", "device_id": "lock-1", "code": PIN, **fields,
    })


def post(receiver: Receiver, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{receiver.url}/webhooks/seam", content=body, headers=headers, timeout=10)


async def test_healthz(receiver: Receiver, redis: Redis) -> None:
    """GET /healthz answers 200 ok."""
    answer = httpx.get(f"{receiver.url}/healthz", timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok\n")


async def test_valid_signature_records_the_event(receiver: Receiver, redis: Redis) -> None:
    """A correctly signed event is answered 200 and recorded under its event_id."""
    body = seam_event(event_type="device.low_battery")
    assert post(receiver, body, signed(body)).status_code == 200
    assert await redis.exists("codeprov:event:evt_1") == 1


async def test_webhook_header_names_are_accepted(receiver: Receiver, redis: Redis) -> None:
    """The standard `webhook-*` header names verify like Svix's `svix-*` ones."""
    body = seam_event(event_type="device.low_battery")
    assert post(receiver, body, signed(body, names="webhook")).status_code == 200
    assert await redis.exists("codeprov:event:evt_1") == 1


async def test_bad_signature_is_401_and_records_nothing(receiver: Receiver, redis: Redis) -> None:
    """A body changed after signing is answered 401; nothing is recorded or counted."""
    headers = signed(seam_event())
    assert post(receiver, seam_event(event_type="device.connected"), headers).status_code == 401
    assert await redis.keys("codeprov:*") == []


async def test_wrong_secret_is_401(receiver: Receiver, redis: Redis) -> None:
    """A body signed with another secret is answered 401."""
    body = seam_event()
    other = "whsec_" + base64.b64encode(b"another-secret-entirely-32-bytes").decode()
    at = datetime.now(UTC)
    headers = {"svix-id": "m", "svix-timestamp": str(int(at.timestamp())),
               "svix-signature": Webhook(other).sign("m", at, body)}
    assert post(receiver, body, headers).status_code == 401
    assert await redis.keys("codeprov:*") == []


async def test_missing_signature_is_401(receiver: Receiver, redis: Redis) -> None:
    """No signature headers, or a malformed signature, is answered 401 and records nothing."""
    body = seam_event()
    assert post(receiver, body, {}).status_code == 401
    assert post(receiver, body, {**signed(body), "svix-signature": "junk"}).status_code == 401
    assert await redis.keys("codeprov:*") == []
    rejected = [e for e in receiver.logged() if e["event"] == "webhook.rejected"]
    assert rejected and rejected[-1]["reason"] == "bad_signature"


async def test_old_timestamp_is_401(receiver: Receiver, redis: Redis) -> None:
    """A correctly signed event whose timestamp is 6 minutes old is answered 401."""
    body = seam_event()
    old = datetime.now(UTC) - timedelta(minutes=6)
    assert post(receiver, body, signed(body, at=old)).status_code == 401
    assert await redis.keys("codeprov:*") == []


async def test_body_over_1_mib_is_413(receiver: Receiver, redis: Redis) -> None:
    """A body over 1 MiB is answered 413, with a Content-Length or chunked without one."""
    body = seam_event(padding="x" * (1024 * 1024))
    assert post(receiver, body, signed(body)).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    chunked = httpx.post(f"{receiver.url}/webhooks/seam", content=chunks(), headers=signed("x"),
                         timeout=10)
    assert chunked.status_code == 413
    assert await redis.keys("codeprov:*") == []


async def test_verified_non_event_is_2xx(receiver: Receiver, redis: Redis) -> None:
    """A verified body that is not a Seam event (not an event, not JSON, empty, nested too deep
    to parse) is answered 200, counted, and logged rejected."""
    bodies = ('{"hello": "world"}', "[1, 2]", "not json at all", "", "[" * 100_000)
    for body in bodies:
        assert post(receiver, body, signed(body)).status_code == 200, body[:20]
    assert (await read_counts(redis, "codeprov"))["ignored_not_event"] == len(bodies)
    rejected = [e for e in receiver.logged() if e["event"] == "webhook.rejected"]
    assert rejected[-1]["reason"] == "not_an_event"


async def test_duplicate_delivery_is_recorded_once(receiver: Receiver, redis: Redis) -> None:
    """The same event delivered twice (a Svix resend) is counted once and once as duplicate."""
    body = seam_event(event_type="device.low_battery")
    assert post(receiver, body, signed(body)).json() == {"outcome": "ignored_type"}
    assert post(receiver, body, signed(body)).json() == {"outcome": "duplicate"}
    counts = await read_counts(redis, "codeprov")
    assert (counts["received"], counts["duplicate"], counts["ignored_type"]) == (2, 1, 1)


async def test_pin_is_never_logged(receiver: Receiver, redis: Redis) -> None:
    """At debug level the receiver logs webhook.received, and never the event's PIN."""
    body = seam_event("evt_pin")
    assert post(receiver, body, signed(body)).status_code == 200
    assert post(receiver, "{}", signed("{}")).status_code == 200
    received = [e for e in receiver.logged() if e["event"] == "webhook.received"]
    assert any(e["event_id"] == "evt_pin" for e in received)
    assert PIN not in receiver.log.read_text()
    assert PIN[-2:] not in "".join(str(e.get("code", "")) for e in receiver.logged())


async def test_event_for_a_waiting_stay_moves_its_job_to_now(
    receiver: Receiver, redis: Redis, redis_url: str
) -> None:
    """An event for a waiting stay's code moves its queued next check from days ahead to now."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.2))])
    async with Rig(redis_url, scenario) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=10))

        async def waiting() -> bool:
            return (await rig.state("B1")).state is Phase.WAITING

        await rig.run_until(waiting)
        state = await rig.state("B1")
        job = job_id("B1", state.seq, prefix="codeprov")
        assert (await redis.zscore("codeprov:queue", job) or 0) > (time.time() + 86400) * 1000
        body = seam_event(access_code_id=state.access_code_id)
        before = time.time() * 1000
        assert post(receiver, body, signed(body)).json() == {"outcome": "taken"}
        moved = await redis.zscore("codeprov:queue", job)
        assert moved is not None and before <= moved <= time.time() * 1000


async def test_guarded_stay_is_woken(receiver: Receiver, redis: Redis, redis_url: str) -> None:
    """An event for a scheduled (guarded) stay's code moves its next guard look to now."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.05))])
    async with Rig(redis_url, scenario) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=2))
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED
        job = job_id("B1", state.seq, prefix="codeprov")
        assert (await redis.zscore("codeprov:queue", job) or 0) > (time.time() + 3600) * 1000
        body = seam_event(access_code_id=state.access_code_id)
        before = time.time() * 1000
        assert post(receiver, body, signed(body)).json() == {"outcome": "taken"}
        moved = await redis.zscore("codeprov:queue", job)
        assert moved is not None and before <= moved <= time.time() * 1000


async def test_final_stay_is_not_woken(receiver: Receiver, redis: Redis, redis_url: str) -> None:
    """An event for a failed stay's code is recorded and counted, and moves no job."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.05))])
    async with Rig(redis_url, scenario) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=2))
        await rig.run()
        state = await rig.state("B1")
        state.state, state.failure = Phase.FAILED, Failure(reason="test", message="failed")
        seq, state.seq = state.seq, state.seq + 1
        assert await StayStore(rig.pool).commit(state, expected_seq=seq)
        queued = await redis.zrange("codeprov:queue", 0, -1, withscores=True)
        body = seam_event(access_code_id=state.access_code_id)
        assert post(receiver, body, signed(body)).json() == {"outcome": "taken"}
        assert await redis.zrange("codeprov:queue", 0, -1, withscores=True) == queued
        assert (await read_counts(redis, "codeprov"))["stays_final"] == 1


async def test_unknown_code_is_ignored(receiver: Receiver, redis: Redis) -> None:
    """An event for a code no stay of ours holds is answered 200 and counted ignored_unmanaged."""
    body = seam_event(access_code_id="ac_not_ours")
    assert post(receiver, body, signed(body)).json() == {"outcome": "ignored_unmanaged"}
    assert (await read_counts(redis, "codeprov"))["ignored_unmanaged"] == 1


def test_cli_refuses_to_start_without_the_secret(redis_url: str) -> None:
    """`codeprov webhook` without SEAM_WEBHOOK_SECRET, or with a malformed one, exits 2."""
    for secret, said in (("", "is not set"), ("whsec_!!not base64", "is not a webhook secret")):
        done = run_cli(redis_url, "webhook", "--port", "1", env={"SEAM_WEBHOOK_SECRET": secret})
        assert done.returncode == 2, done.stderr
        assert f"codeprov: SEAM_WEBHOOK_SECRET {said}" in done.stderr.decode()
        assert "!!not" not in done.stderr.decode()
