"""A long-running task of the worker (the intake consumer, the events feed), kept running.

A crash is logged (`<name>.crashed`, with the exception), reported while the task is down (the
heartbeat's `set_problem`, so `codeprov health` fails), and the task restarted with backoff;
the report clears once a round of the task goes through again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from worker.limiter import backoff
from worker.logs import get_logger

Report = Callable[[str | None], None]  # why the task is down, or None: it runs again
Runner = Callable[[Callable[[], None]], Awaitable[None]]  # run(on_running) until cancelled


async def supervise(
    name: str, what: str, run: Runner, report: Report, *, base: float = 1.0, cap: float = 60.0
) -> None:
    """`run` until cancelled; `name` names its log events, `what` its health problem."""
    crashes = 0

    def running() -> None:
        nonlocal crashes
        crashes = 0
        report(None)

    while True:
        try:
            await run(running)
        except Exception as exc:  # a bug, or a Redis error that will not pass by itself
            delay = backoff(crashes, base=base, cap=cap)
            crashes += 1
            report(f"{what} crashed ({type(exc).__name__}); see {name}.crashed")
            get_logger().error(
                f"{name}.crashed",
                error=f"{type(exc).__name__}: {exc}",
                restart_in_s=round(delay, 3),
                exc_info=exc,
            )
            await asyncio.sleep(delay)
