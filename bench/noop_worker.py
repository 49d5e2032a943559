"""`python -m bench.noop_worker`: the queue's ceiling, a baseline of the overhead benchmark.

The arq settings `make_worker` gives a codeprov worker (queue, max_jobs, CODEPROV_QUEUE_POLL,
timeouts, keep_result, queue_read_limit, our JSON (de)serializer), the same Redis, configured
from the same environment, but the step function does nothing. Jobs are shaped like ours
(`advance_stay` with booking_id and seq), so reading and parsing them costs the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.worker import Worker, func

from worker.queue import STEP_FUNCTION
from worker.runtime import worker_options
from worker.settings import Settings


async def noop(ctx: dict[str, Any], **kwargs: Any) -> None:
    return None


def noop_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    return Worker(
        functions=[func(noop, name=STEP_FUNCTION, max_tries=100)],
        **worker_options(settings, burst=burst, handle_signals=handle_signals),
    )


def main() -> None:
    from worker.commands import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    noop_worker(settings).run()


if __name__ == "__main__":
    main()
