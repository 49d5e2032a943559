"""SIGTERM and SIGINT end a worker in every phase, not only while arq's loop runs.

arq handles both while its loop runs, but a worker also spends time outside it: checking its
Redis credentials, connecting, waiting out an outage, closing. There Python's default applies,
which is the kernel's: it ends the process, except when the process is PID 1 (a container
without an init), for which the kernel ignores a signal that has no handler, so a rollout's
SIGTERM was lost and SIGKILL came at the end of the grace period. So every phase runs under
handlers of ours: a signal cancels the phase and raises `Stopped`; between phases a signal is
noted, and stops the worker before the next phase starts.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

from arq.worker import Worker

from worker.logs import get_logger

SIGNALS = (signal.SIGTERM, signal.SIGINT)
T = TypeVar("T")


class Stopped(Exception):
    """A SIGTERM or SIGINT arrived outside arq's running loop: the worker ends, status 0."""

    def __init__(self, signum: signal.Signals, phase: str) -> None:
        super().__init__(f"{signum.name} during {phase}")
        self.signum, self.phase = signum, phase


class Signals:
    """The worker process's SIGTERM/SIGINT handling, phase by phase (main thread only)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # by us: the worker ends
        self.by_arq: signal.Signals | None = None  # by arq's handlers: arq shut down

    def note(self) -> None:
        """Between phases (no loop of ours running): note a signal, for the next phase."""
        for sig in SIGNALS:
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def run(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], phase: str) -> T:
        """Run `coro` on `loop` to its end, or until a signal cancels it (`Stopped`)."""
        if self.received is not None:
            coro.close()
            raise Stopped(self.received, phase)
        task = loop.create_task(coro)

        def stop(sig: signal.Signals) -> None:
            self.received = sig
            task.cancel()

        for sig in SIGNALS:  # replaces arq's on this loop, if it had installed any
            loop.add_signal_handler(sig, stop, sig)
        try:
            result = loop.run_until_complete(task)
        except asyncio.CancelledError:
            if self.received is None:
                raise
            raise Stopped(self.received, phase) from None
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)  # back to SIG_DFL: note() at once
            self.note()
        if self.received is not None:  # it came as the phase ended
            raise Stopped(self.received, phase)
        return result

    def run_arq(self, loop: asyncio.AbstractEventLoop, worker: Worker) -> None:
        """`worker.run()`, with arq's close bounded and under our handlers: arq's only cancel
        its main task, which is over by then, and a close against a Redis that is gone or hung
        waits for it (~40 s, or for ever: arq sets no socket timeout)."""
        if self.received is not None:
            raise Stopped(self.received, "connect")
        worker.on_stop = self._arq_stopped
        worker.main_task = loop.create_task(worker.main())
        try:
            loop.run_until_complete(worker.main_task)
        except asyncio.CancelledError:
            pass  # arq's own SIGTERM handling cancels its main task
        finally:
            self.run(loop, _bounded(worker.close(), CLOSE_LIMIT), "shutdown")

    def _arq_stopped(self, signum: signal.Signals) -> None:
        self.by_arq = signum


CLOSE_LIMIT = 5.0  # seconds for arq's close (its Redis clean-up, our on_shutdown), after jobs


async def _bounded(close: Coroutine[Any, Any, None], limit: float) -> None:
    """Close, or give up after `limit`: what is left (a worker key, arq's health key) expires."""
    try:
        async with asyncio.timeout(limit):
            await close
    except TimeoutError:
        get_logger().warning("worker.close_timed_out", limit_s=limit)
