"""Reading a stay's outcome (for `codeprov status`)."""

from __future__ import annotations

from typing import Any

from jobs.state import StayStore
from worker.deps import utcnow
from worker.queue import connect
from worker.settings import Settings


async def read_status(settings: Settings, booking_id: str) -> dict[str, Any] | None:
    redis = await connect(settings)
    try:
        state = await StayStore(redis, settings.key_prefix).get(booking_id)
        return None if state is None else state.public(utcnow())
    finally:
        await redis.aclose()
