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

from worker.queue import STEP_FUNCTION, deserialize, redis_settings, serialize
from worker.settings import Settings


async def noop(ctx: dict[str, Any], **kwargs: Any) -> None:
    return None


def noop_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    return Worker(
        functions=[func(noop, name=STEP_FUNCTION, max_tries=100)],
        queue_name=settings.queue_name,
        redis_settings=redis_settings(settings),
        burst=burst,
        poll_delay=settings.queue_poll,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout,
        keep_result=0,
        max_tries=50,
        queue_read_limit=max(1000, settings.max_jobs * 20),
        job_completion_wait=settings.shutdown_wait,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=handle_signals,
        log_results=False,
    )


def main() -> None:
    from worker.cli import _configure_logging, load_settings

    settings = load_settings()
    _configure_logging(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    noop_worker(settings).run()


if __name__ == "__main__":
    main()
