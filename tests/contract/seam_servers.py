"""The two Seam servers the contract tests run against: our sandbox and Seam's own fake.

Seam's fake (`@seamapi/fake-seam-connect`) is a Node program: it is installed once into
`.cache/fake-seam-connect/` with npm, started on a free loopback port with its default seed, and
stopped at the end of the session. Both servers are driven through the same `Server` interface,
so a test says what Seam does, not which server it talks to.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from shutil import which
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from seam_sandbox import DeviceSpec, Latency, Outage, Sandbox, SandboxClock, Scenario
from worker.limiter import Limiter
from worker.seam import SeamClient

FAKE_PACKAGE = "@seamapi/fake-seam-connect"
FAKE_VERSION = "1.86.0"
FAKE_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "fake-seam-connect"
# Ids from the fake's GET /_fake/default_seed; the sandbox gets locks with the same ids.
SEED_LOCKS = ("august_device_1", "august_device_2")
_SEAM_FAKE_JS = Path("node_modules", *FAKE_PACKAGE.split("/"), "dist", "server.js")
MakeClient = Callable[..., SeamClient]
_MIN_NODE = 18  # the fake's package.json: "engines": {"node": ">=18.12.0"}


class FakeUnavailable(Exception):
    """node or npm is missing, too old, or the npm install failed."""


class Server(ABC):
    """One Seam-like server as the tests see it: an endpoint, a key and two seeded locks."""

    name: str
    endpoint: str
    api_key: str
    device_id: str
    other_device_id: str

    def transport(self) -> httpx.AsyncBaseTransport | None:
        return None

    def client(self, limiter: Limiter, api_key: str | None = None) -> SeamClient:
        return SeamClient(
            self.endpoint, api_key or self.api_key, limiter=limiter, transport=self.transport()
        )

    def http(self) -> httpx.AsyncClient:
        """A bare HTTP client, to show what a server answers before our client reads it."""
        return httpx.AsyncClient(
            base_url=self.endpoint,
            transport=self.transport(),
            headers={"Authorization": f"Bearer {self.api_key}"},
        )

    @abstractmethod
    def settle(self) -> None:
        """Let the server finish what it does asynchronously (the sandbox's deletes)."""

    @abstractmethod
    def outage(self, route: str) -> AbstractContextManager[None]:
        """While open, `route` answers 503 with an empty body."""


class SandboxServer(Server):
    """Our sandbox over ASGITransport, on a frozen clock that `settle()` pushes forward."""

    name = "sandbox"
    endpoint = "http://sandbox"
    latency_s = 5.0

    def __init__(self, device_ids: tuple[str, str] = SEED_LOCKS, **scenario: Any) -> None:
        self.device_id, self.other_device_id = device_ids
        self._scenario = scenario  # further Scenario fields, e.g. generate_code_shape
        self.sandbox = self._build()
        self.api_key = self.sandbox.api_key

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self._app)

    def settle(self) -> None:
        self.sandbox.clock.advance(10 * self.latency_s)

    @contextmanager
    def outage(self, route: str) -> Iterator[None]:
        # Outages are scenario data: serve a sandbox that has one, like the fake's workspace.
        normal, self.sandbox = self.sandbox, self._build([Outage(routes=[route])])
        try:
            yield
        finally:
            self.sandbox = normal

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.sandbox.app(scope, receive, send)

    def _build(self, outages: list[Outage] | None = None) -> Sandbox:
        locks = [
            DeviceSpec(id=d, latency=Latency.fixed(self.latency_s))
            for d in (self.device_id, self.other_device_id)
        ]
        scenario = Scenario(devices=locks, outages=outages or [], **self._scenario)
        return Sandbox(scenario, clock=SandboxClock(speed=0))


@dataclass
class FakeSeam:
    """A running `fake-seam-connect --seed`: its loopback URL and its seed ids."""

    process: subprocess.Popen[bytes]
    url: str
    seed: dict[str, Any]
    log: Path

    @classmethod
    def start(cls, server_js: Path, log: Path, timeout: float = 30.0) -> FakeSeam:
        port = _free_port()
        env = {**os.environ, "PORT": str(port), "NODE_ENV": "production"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [node(), str(server_js), "--seed"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(process, url, log, timeout)
            seed = httpx.get(f"{url}/_fake/default_seed", timeout=5).json()
        except BaseException:
            _stop(process)
            raise
        return cls(process, url, seed, log)

    def simulate_outage(self, workspace_id: str, routes: list[str]) -> None:
        """Seam's fake answers 503 (empty body) on `routes` of a workspace; [] ends it."""
        answer = httpx.post(
            f"{self.url}/_fake/simulate_workspace_outage",
            timeout=5,
            json={"workspace_id": workspace_id, "routes": routes},
        )
        answer.raise_for_status()

    def stop(self) -> None:
        _stop(self.process)


class FakeServer(Server):
    """Seam's fake over TCP on 127.0.0.1. It applies every change at once: nothing to settle."""

    name = "seam_fake"

    def __init__(self, fake: FakeSeam) -> None:
        self.fake = fake
        self.endpoint = fake.url
        self.api_key = fake.seed["seam_apikey1_token"]
        self.device_id, self.other_device_id = (fake.seed[k] for k in SEED_LOCKS)
        self.workspace_id = fake.seed["seed_workspace_1"]

    def settle(self) -> None:
        """Nothing to wait for: the fake deletes a code as soon as it is asked to."""

    @contextmanager
    def outage(self, route: str) -> Iterator[None]:
        self.fake.simulate_outage(self.workspace_id, [route])
        try:
            yield
        finally:
            self.fake.simulate_outage(self.workspace_id, [])


def install_fake(cache: Path = FAKE_CACHE, timeout: float = 100.0) -> Path:
    """The fake's server.js, npm-installed into `cache` unless that version is already there."""
    return install_npm(FAKE_PACKAGE, FAKE_VERSION, cache, _SEAM_FAKE_JS, timeout)


def install_npm(package: str, version: str, cache: Path, entry: Path, timeout: float) -> Path:
    """`cache/entry` of `package@version`, npm-installed into `cache` unless already there."""
    node, npm = which("node"), which("npm")
    if node is None or npm is None:
        raise FakeUnavailable(f"{package} needs node and npm on PATH")
    _check_node_version()
    cache.mkdir(parents=True, exist_ok=True)
    # Two pytest sessions may start at once: one installs, the other waits, then reuses it.
    with (cache / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(cache, package, entry) != version:
            _npm_install(npm, cache, package, version, entry, timeout)
    return cache / entry


def _npm_install(
    npm: str, cache: Path, package: str, version: str, entry: Path, timeout: float
) -> None:
    command = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(
            [*command, f"{package}@{version}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FakeUnavailable(f"npm install of {package} took over {timeout:.0f}s") from None
    if done.returncode != 0 or _installed_version(cache, package, entry) != version:
        raise FakeUnavailable(
            f"npm install of {package}@{version} failed "
            f"({done.returncode}): {_npm_error(done.stderr or done.stdout)}"
        )


def _npm_error(output: str) -> str:
    """npm's first few error lines, without its stack trace."""
    lines = [line.removeprefix("npm error").strip() for line in output.splitlines()]
    return "; ".join([line for line in lines if line and not line.startswith("at ")][:4])


def _installed_version(cache: Path, package: str, entry: Path) -> str | None:
    manifest = cache / "node_modules" / package / "package.json"
    if not (cache / entry).is_file() or not manifest.is_file():
        return None
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    return str(version) if version else None


def node() -> str:
    node = which("node")
    if node is None:
        raise FakeUnavailable("Seam's npm packages need node on PATH")
    return node


def _check_node_version() -> None:
    version = subprocess.run(
        [node(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < _MIN_NODE:
        raise FakeUnavailable(f"Seam's npm packages need node >= {_MIN_NODE}, found {version!r}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Seam's fake exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/health", timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Seam's fake did not answer {url}/health within {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
