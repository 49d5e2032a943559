"""Reading a stay's outcome (for `codeprov status`)."""

from __future__ import annotations

from typing import Any

from jobs.group import group_public, lock_view, read_group
from jobs.state import StayStore
from worker.deps import utcnow
from worker.queue import connect
from worker.settings import Settings


async def read_status(settings: Settings, booking_id: str) -> dict[str, Any] | None:
    redis = await connect(settings)
    try:
        store = StayStore(redis, settings.key_prefix)
        first, records = await read_group(store, booking_id)
        if first is None:
            return None
        if first.grouped:
            return group_public(first, records, utcnow())
        return first.public(utcnow()) | {"locks": [lock_view(first.stay.device_id, first)]}
    finally:
        await redis.aclose()
