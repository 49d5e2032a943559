"""The suite's own hygiene: tests write only under their own folders, and a test worker that is
stopped leaves nothing half-done behind for the next one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from harness import Rig, run_cli
from redis.asyncio import Redis

from bench.cluster import Served, worker_env
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.health import count_alive
from worker.health import heartbeat_file as configured_heartbeat_file

pytestmark = pytest.mark.anyio


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


class SlowCreates(httpx.AsyncBaseTransport):
    """The sandbox behind a network that holds each create for `delay` seconds."""

    def __init__(self, inner: httpx.AsyncBaseTransport, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.create_sent = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/access_codes/create":
            self.create_sent.set()
            await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)


class SlowCreateRig(Rig):
    slow: SlowCreates

    def transport(self) -> httpx.AsyncBaseTransport:
        return self.slow


# These take tmp_path, not conftest's `heartbeat_file` fixture: they check that it is autouse.


async def test_in_process_workers_beat_into_the_tests_folder(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """A test's in-process worker beats into that test's tmp_path, and removes it on stop."""
    heartbeat_file = tmp_path / "heartbeat"
    assert configured_heartbeat_file() == heartbeat_file
    async with Rig(redis_url, one_lock()) as rig:

        async def beating() -> bool:
            return heartbeat_file.exists()

        await rig.run_until(beating, timeout=10)
    assert not heartbeat_file.exists()


def test_child_processes_inherit_the_tests_heartbeat_file(redis_url: str, tmp_path: Path) -> None:
    """`codeprov` run by a test reads the test's heartbeat file (absent here: unhealthy)."""
    done = run_cli(redis_url, "health")
    assert done.returncode == 1
    assert f"no heartbeat file at {tmp_path / 'heartbeat'}".encode() in done.stderr


def test_bench_workers_keep_the_tests_heartbeat_file(redis_url: str, tmp_path: Path) -> None:
    """Worker processes a test starts through bench.cluster beat into the test's folder."""
    env = worker_env(redis_url, Served("http://127.0.0.1:1", "k", []))
    assert env["CODEPROV_HEARTBEAT_FILE"] == str(tmp_path / "heartbeat")


async def test_stopped_worker_finishes_its_running_step(redis: Redis, redis_url: str) -> None:
    """run_until stops its worker without cutting the step it is running: the create in flight
    is answered and recorded, the next check is queued, no in-progress key is left behind and
    the worker's shutdown ran (it no longer counts as alive)."""
    rig = SlowCreateRig(redis_url, one_lock())
    async with rig:
        rig.slow = SlowCreates(httpx.ASGITransport(app=rig.sandbox.app), delay=0.5)
        await rig.enqueue(rig.stay("B1"))

        async def create_in_flight() -> bool:
            return rig.slow.create_sent.is_set()

        await rig.run_until(create_in_flight, timeout=10)
        state = await rig.state("B1")
        assert state.access_code_id is not None, "the create's answer was not recorded"
        queued = [m.decode() for m in await rig.pool.zrange(rig.settings.queue_name, 0, -1)]
        [b1_job] = [m for m in queued if ":B1:" in m]
        assert b1_job.endswith(f":B1:{state.seq}")
        assert await rig.pool.keys("arq:in-progress:*B1*") == []
        assert await count_alive(rig.pool, rig.settings.key_prefix) == 0
