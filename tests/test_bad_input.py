"""Bad input gets a clear error, and nothing else is lost."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import Rig, run_cli
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.errors import SeamProtocolError
from worker.limiter import Budgets, Limiter, Rate
from worker.seam import SeamClient

pytestmark = pytest.mark.anyio


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


@dataclass
class Evil:
    """A pickle that, if ever loaded, creates `marker` (under the test's own tmp_path)."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_evil_pickle_would_leave_its_marker(tmp_path: Path) -> None:
    """The marker is a true witness: loading the pickle does create it."""
    pickle.loads(pickle.dumps(Evil(tmp_path / "pwned")))
    assert (tmp_path / "pwned").exists()


async def test_pickle_in_a_job_key_is_not_run(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """A pickle written over a stay's job never executes; the stay fails with invalid_job."""
    marker = tmp_path / "pwned"
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.enqueue(rig.stay("B2"))
        await rig.pool.set("arq:job:codeprov:B1:0", pickle.dumps(Evil(marker)))
        await rig.run()
        assert not marker.exists()
        bad, good = await rig.state("B1"), await rig.state("B2")
        assert bad.state is Phase.FAILED and bad.failure is not None
        assert bad.failure.reason == "invalid_job"
        assert "not UTF-8" in bad.failure.message or "not JSON" in bad.failure.message
        assert good.state is Phase.SCHEDULED


async def test_garbage_job_without_a_stay_is_dropped(redis: Redis, redis_url: str) -> None:
    """Raw garbage queued under an unknown id is rejected (logged with why, then removed from
    the queue); the worker goes on."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.set("arq:job:junk", b"\xff\x00garbage")
        now_ms = int(datetime.now(UTC).timestamp() * 1000)  # arq skips a score of 0
        await rig.pool.zadd(rig.settings.queue_name, {"junk": now_ms})
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        [rejected] = [e for e in logs if e["event"] == "job.rejected"]
        assert (rejected["job_id"], rejected["log_level"]) == ("junk", "error")
        assert "not UTF-8" in rejected["reason"]
        assert await rig.pool.zscore(rig.settings.queue_name, "junk") is None
        assert not await rig.pool.exists("arq:job:junk")


async def test_wrong_job_arguments_fail_the_stay(redis: Redis, redis_url: str) -> None:
    """A well-formed job with wrongly typed arguments fails its stay with a reason."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        job = {
            "t": 1,
            "f": "advance_stay",
            "a": [],
            "k": {"booking_id": "B1", "seq": "zero"},
            "et": 0,
        }
        await rig.pool.set("arq:job:codeprov:B1:0", json.dumps(job))
        await rig.run()
        state = await rig.state("B1")
        assert state.failure is not None and state.failure.reason == "invalid_job"


async def test_corrupt_state_record_does_not_kill_the_worker(redis: Redis, redis_url: str) -> None:
    """A state record that no longer validates is logged (an error naming the stay and why);
    other stays go on."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.enqueue(rig.stay("B2"))
        await rig.pool.set("codeprov:stay:B1", b'{"stay": {"booking_id": 5}}')
        with capture_logs() as logs:
            await rig.run()
        assert (await rig.state("B2")).state is Phase.SCHEDULED
        about_b1 = [e for e in logs if e.get("booking_id") == "B1" and e["log_level"] == "error"]
        assert about_b1, "nothing logged about the unreadable record"
        assert all("stored state of booking 'B1' is invalid" in e["reason"] for e in about_b1)


async def test_invalid_record_at_its_seq_leaves_no_stay_lock(redis: Redis, redis_url: str) -> None:
    """A record at the job's seq that Redis can read but that no longer validates takes the
    per-stay lock in the step's first call: the step is rejected and the lock is released."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.pool.set("codeprov:stay:B1",
                           b'{"stay": {"booking_id": 5}, "seq": 0, "state": "queued"}')
        await rig.run()
        assert not await rig.pool.exists("codeprov:lock:B1")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"<html>gateway</html>", "text/html", "not a JSON object"),
        (b'{"ok": true}', "application/json", "lacks the object 'access_code'"),
        (
            b'{"access_code": {"code": "1234"}, "ok": true}',
            "application/json",
            "access_code_id: Field required",
        ),
    ],
)
async def test_unusable_seam_answers_are_protocol_errors(
    redis: Redis, body: bytes, content_type: str, expected: str
) -> None:
    """A 200 that is not JSON or lacks fields raises a retryable SeamProtocolError."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    limiter = Limiter(redis, Budgets(Rate(1000, 1, 100), {}))
    client = SeamClient(
        "http://seam", "key", limiter=limiter, transport=httpx.MockTransport(answer)
    )
    with pytest.raises(SeamProtocolError, match=expected) as info:
        await client.get_access_code("ac1")
    assert info.value.retryable
    await client.aclose()


async def test_enqueue_file_mixed_lines(redis: Redis, redis_url: str) -> None:
    """Valid lines are enqueued, each bad line says why, and the exit status is 1."""
    later = datetime.now(UTC) + timedelta(days=2)
    good = {
        "booking_id": "G1",
        "device_id": "lock-1",
        "starts_at": later.isoformat(),
        "ends_at": (later + timedelta(days=1)).isoformat(),
    }
    lines = [
        json.dumps(good).encode(),
        b"{not json",
        b"\xff\xfe not utf-8",
        json.dumps({"booking_id": "B2"}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({**good, "booking_id": "B3", "ends_at": good["starts_at"]}).encode(),
        b"",
    ]
    proc = run_cli(redis_url, "enqueue", "--file", "-", stdin=b"\n".join(lines))
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr
    assert [o["result"] for o in out] == ["enqueued"] + ["invalid"] * 5
    assert "line 2: not JSON" in out[1]["error"]
    assert "line 3: not UTF-8" in out[2]["error"]
    assert "device_id: Field required" in out[3]["error"]
    assert "expected a JSON object" in out[4]["error"]
    assert out[5]["booking_id"] == "B3" and "after starts_at" in out[5]["error"]
    assert await redis.exists("codeprov:stay:G1")


async def test_enqueue_flags_and_duplicate(redis: Redis, redis_url: str) -> None:
    """The flag form enqueues one stay, and again says duplicate with exit 0."""
    args = ("enqueue", "--booking-id", "B9", "--device-id", "lock-1")
    first, second = run_cli(redis_url, *args), run_cli(redis_url, *args)
    assert json.loads(first.stdout)["result"] == "enqueued"
    assert json.loads(second.stdout) == {
        "booking_id": "B9",
        "job_id": "codeprov:B9:0",
        "result": "duplicate",
    }
    assert second.returncode == 0


async def test_status_unknown_booking_exits_1(redis: Redis, redis_url: str) -> None:
    """status for an unknown booking says so on stderr and exits 1."""
    proc = run_cli(redis_url, "status", "nope", "--json")
    assert proc.returncode == 1
    assert b"no stay with booking_id 'nope'" in proc.stderr


async def test_bad_configuration_is_named(redis_url: str) -> None:
    """A bad environment value names the variable and exits 2."""
    env = {**os.environ, "REDIS_URL": "http://nope", "SEAM_API_KEY": "k"}
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--burst"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"REDIS_URL must start with redis://" in proc.stderr
