"""What this worker process is doing, in its heartbeat file; and a watchdog for a stuck loop.

The heartbeat file (`CODEPROV_HEARTBEAT_FILE`) holds one JSON object, `{"state": ..., "since":
..., "pid": ...}` plus details, and its mtime is the last beat. Who beats depends on the state:
- `running`: arq runs, and its event loop's heartbeat task touches the file
  (`worker.health.Heartbeat`): a stuck loop stops the beats, so `codeprov health` fails.
- `waiting_for_redis` (checking credentials, connecting, waiting out an outage) and
  `draining_intake` (`--burst`): no arq loop beats, yet the worker is alive, so the
  `Liveness` thread touches the file every interval.
- `redis_refused`: nobody beats, and `codeprov health` fails at once (configuration to fix).
- `stopping`: a clean shutdown; the file is then removed.
While `running`, the same thread is a watchdog: if the loop's heartbeat has not run for
`CODEPROV_HEARTBEAT_WATCHDOG` intervals it logs `worker.stuck`, dumps every thread's stack and
exits with status 70, so a supervisor that never acts on health (Compose) restarts the worker.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.logs import get_logger

RUNNING = "running"
WAITING = "waiting_for_redis"
DRAINING = "draining_intake"
REFUSED = "redis_refused"
STOPPING = "stopping"
BEATING = frozenset({WAITING, DRAINING})  # states in which the thread touches the file
ALIVE = frozenset({RUNNING, WAITING, DRAINING})  # states `codeprov health` accepts

WATCHDOG_ENV = "CODEPROV_HEARTBEAT_WATCHDOG"
DEFAULT_WATCHDOG = 6  # intervals without a loop beat before the worker exits; 0: never
STUCK_EXIT = 70  # EX_SOFTWARE


def watchdog_beats(env: Mapping[str, str] = os.environ) -> int:
    raw = env.get(WATCHDOG_ENV)
    try:
        value = int(raw) if raw else DEFAULT_WATCHDOG
    except ValueError:
        raise ValueError(f"{WATCHDOG_ENV} must be a number of intervals, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{WATCHDOG_ENV} must be 0 (off) or more, not {raw!r}")
    return value


def write_state(path: Path, state: str, since: float, **detail: object) -> None:
    """Replace the file's content at once (a probe never reads half of it); this is a beat."""
    record = {"state": state, "since": _iso(since), "pid": os.getpid(), **detail}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record) + "\n")
    os.replace(temporary, path)


def read_state(path: Path) -> dict[str, Any]:
    """The file's state record; {} if it has none (an older worker's empty file, or garbage)."""
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _exit_stuck() -> None:
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(STUCK_EXIT)  # not SystemExit: the main thread is the one that is stuck


class Liveness:
    """The process's state in the heartbeat file, and the thread that beats or watches."""

    def __init__(
        self,
        path: Path,
        interval: float,
        watchdog: int = DEFAULT_WATCHDOG,
        on_stuck: Callable[[], None] = _exit_stuck,
    ) -> None:
        self.path, self.interval, self.watchdog, self._on_stuck = path, interval, watchdog, on_stuck
        self.state: str | None = None
        self._detail: dict[str, object] = {}
        self._since = time.time()
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()  # the state, and every write of the file
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="codeprov-liveness", daemon=True)

    def enter(self, state: str, **detail: object) -> None:
        """Record `state` in the file now (a change of phase within a state keeps its `since`)."""
        with self._lock:
            if state != self.state:
                self._since = time.time()
            self.state, self._detail = state, detail
            self._last_beat = time.monotonic()
            if state != STOPPING:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_state(self.path, state, self._since, **detail)

    def beat(self) -> None:
        """The event loop's heartbeat ran: what the watchdog waits for while `running`."""
        self._last_beat = time.monotonic()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            stuck_for = self._tick()
            if stuck_for is not None:
                get_logger().error(
                    "worker.stuck",
                    seconds_without_beat=round(stuck_for, 1),
                    watchdog_intervals=self.watchdog,
                    exit_status=STUCK_EXIT,
                )
                self._on_stuck()
                return

    def _tick(self) -> float | None:
        """Beat if we are the ones beating; seconds since the loop's last beat if it is stuck."""
        with self._lock:
            if self.state in BEATING:
                try:
                    if self.path.exists():
                        os.utime(self.path)
                    else:  # removed under us: write it again, state and all
                        write_state(self.path, self.state or WAITING, self._since, **self._detail)
                except OSError as exc:
                    get_logger().error(
                        "worker.heartbeat.file_failed", path=str(self.path), error=str(exc)
                    )
            elif self.state == RUNNING and self.watchdog:
                silent = time.monotonic() - self._last_beat
                if silent > self.watchdog * self.interval:
                    return silent
        return None

    def close(self) -> None:
        """Stop the thread and remove the file: this worker is gone."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self.state = STOPPING
            self.path.unlink(missing_ok=True)


_current: Liveness | None = None


def current() -> Liveness | None:
    """The process's Liveness while `run_worker` runs; None otherwise (tests, the demo)."""
    return _current


@contextlib.contextmanager
def installed(liveness: Liveness) -> Iterator[Liveness]:
    """Make `liveness` the process's, its thread running, for the `with` block."""
    global _current
    _current = liveness
    liveness._thread.start()
    try:
        yield liveness
    finally:
        _current = None
        liveness.close()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
