"""What a Seam event does to a stay: recorded once, mapped to its stay, and the stay woken.

One path for every way an event comes in (the webhook receiver, the events feed):
`Events.take`. An event is de-duplicated by its `event_id` across receivers and restarts, found
its stay through the indexes `StayStore.commit` writes (`{prefix}:code:{access_code_id}`, and
`{prefix}:device:{device_id}` for a lock's events), and wakes that stay: the stay's next check,
already in arq's queue with a later score, is moved to now, with a signal of what the events
said (jobs/guard.py decides from it whether that check needs to call Seam at all).

Keys: `{prefix}:event:{event_id}` (a short summary, no PIN; kept 7 days, longer than Svix's
retries span), `{prefix}:events:counts` (a hash of counters, for `stats` and `/metrics`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from arq.constants import in_progress_key_prefix
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from jobs.events_lua import IGNORE, TAKE
from jobs.state import code_index_key, device_index_key

_DUP, _UNMANAGED, _TAKEN = 0, 1, 2  # what TAKE returns first

__all__ = [
    "CODE_EVENTS", "DEVICE_EVENTS", "SCHEDULED_EVENTS", "Events", "Outcome", "SeamEvent",
    "flowing_key", "parse_event", "read_counts", "signal_key", "webhooks_key",
]

DEDUP_SECONDS = 7 * 24 * 3600  # Svix retries for ~28 h; the feed overlaps by minutes
COUNTS = "events:counts"
# The access-code events that may change what a check of the code finds (SEAM-API.md, Events).
CODE_EVENTS = frozenset(
    f"access_code.{name}"
    for name in (
        "created", "changed", "name_changed", "code_changed", "time_frame_changed",
        "mutations_requested", "scheduled_on_device", "set_on_device", "removed_from_device",
        "delay_in_setting_on_device", "failed_to_set_on_device", "delay_in_removing_from_device",
        "failed_to_remove_from_device", "deleted", "modified_external_to_seam",
        "deleted_external_to_seam", "backup_access_code_pulled", "issued", "delay_in_issuing",
        "failed_to_issue", "failed_to_update", "failed_to_expire",
    )
)
DEVICE_EVENTS = frozenset({"device.disconnected", "device.connected"})
# The events that say the code is on the lock: a woken step may skip its `get` (jobs/guard.py).
SCHEDULED_EVENTS = frozenset({"access_code.scheduled_on_device", "access_code.set_on_device"})
# Echoes of our own requests: they tell a stay nothing new, so they wake none (a `get` each).
OWN_EVENTS = frozenset({"access_code.created", "access_code.mutations_requested"})


class SeamEvent(BaseModel):
    """The fields of an event we route by; the rest (a PIN in `code`, errors) is not kept."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    event_id: str = Field(min_length=1, max_length=200)
    event_type: str = Field(min_length=1, max_length=200)
    access_code_id: str | None = Field(None, max_length=200)
    device_id: str | None = Field(None, max_length=200)
    occurred_at: str | None = Field(None, max_length=64)


def parse_event(body: bytes | str) -> SeamEvent | None:
    """A Seam event, or None for anything else (not JSON, not an object, no id or type)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    try:
        return SeamEvent.model_validate(data)
    except ValidationError:
        return None




@dataclass(frozen=True)
class Outcome:
    """What an event did: `kind` is also its counter's name in `{prefix}:events:counts`."""

    kind: str  # taken | duplicate | ignored_unmanaged | ignored_type | ignored_own | ...
    stays: tuple[str, ...] = ()  # the stays it concerns (ours)
    woken: tuple[str, ...] = ()  # those whose queued check it moved to now




def flowing_key(prefix: str) -> str:
    """Set (with a TTL) while Seam's events reach us: a verified webhook or a feed poll."""
    return f"{prefix}:events:flowing"


def webhooks_key(prefix: str) -> str:
    """Set (with a TTL) while webhooks arrive: the feed then only catches up."""
    return f"{prefix}:webhooks:seen"


def signal_key(prefix: str, booking_id: str) -> str:
    """What events said of a stay's code since its last step (see `events_lua.TAKE`)."""
    return f"{prefix}:signal:{booking_id}"


class Events:
    """The event path of one deployment: its key prefix and arq queue."""

    def __init__(self, redis: Redis, prefix: str, queue: str, alive: float = 3600.0) -> None:
        self.redis, self.prefix, self.queue = redis, prefix, queue
        self.counts_key = f"{prefix}:{COUNTS}"
        self.alive = alive  # how long one sign of life keeps events "flowing"
        self._take = redis.register_script(TAKE)
        self._ignore = redis.register_script(IGNORE)
        self._noted = 0.0

    async def note_alive(self, *, webhook: bool) -> None:
        """Events reach us (a verified webhook, or a feed poll that worked): say so for
        `alive` seconds. At most once a second per process: the receiver's hot path."""
        now = time.monotonic()
        if now - self._noted < 1.0:
            return
        self._noted = now
        ttl = max(1, int(self.alive))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(flowing_key(self.prefix), "1", ex=ttl)
            if webhook:
                pipe.set(webhooks_key(self.prefix), "1", ex=ttl)
            await pipe.execute()

    async def take(self, event: SeamEvent, *, now_ms: int | None = None) -> Outcome:
        """Record `event` once and wake the stays it concerns (see the module docstring)."""
        routed = _route(event)
        if routed is None:  # recorded too: the feed's overlap and Svix's resends come again
            kind = "ignored_own" if event.event_type in OWN_EVENTS else "ignored_type"
            keys = [f"{self.prefix}:event:{event.event_id}", self.counts_key]
            fresh = await self._ignore(keys=keys, args=[DEDUP_SECONDS, _summary(event), kind])
            return Outcome(kind if fresh else "duplicate")
        mode, key_id = routed
        index = (
            code_index_key(self.prefix, key_id)
            if mode == "code"
            else device_index_key(self.prefix, key_id)
        )
        keys = [f"{self.prefix}:event:{event.event_id}", self.counts_key, index, self.queue]
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms  # arq's clock: wall time
        scheduled = event.event_type in SCHEDULED_EVENTS and event.occurred_at
        args: list[str | int] = [DEDUP_SECONDS, _summary(event), self.prefix, now_ms, mode, key_id,
                                 in_progress_key_prefix, "scheduled" if scheduled else "other",
                                 _epoch_ms(event.occurred_at)]
        found = await self._take(keys=keys, args=args)
        if found[0] == _DUP:
            return Outcome("duplicate")
        if found[0] == _UNMANAGED:
            return Outcome("ignored_unmanaged")
        return Outcome("taken", stays=_texts(found[2]), woken=_texts(found[1]))

    async def count(self, *fields: str) -> None:
        """Add one to each counter (an event the path never saw: the receiver's rejections)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in fields:
                pipe.hincrby(self.counts_key, name, 1)
            await pipe.execute()


async def read_counts(redis: Redis, prefix: str) -> dict[str, int]:
    """The event counters, by name (empty before the first event)."""
    raw = await redis.hgetall(f"{prefix}:{COUNTS}")  # type: ignore[misc]
    return {_text(k): int(v) for k, v in sorted(raw.items())}


def _route(event: SeamEvent) -> tuple[str, str] | None:
    """Which index finds the event's stays: ('code', id), ('device', id), or None to ignore.

    `connected_account.disconnected` names no lock, and we keep no index by account: ignored
    here (Seam also reports each of the account's locks `device.disconnected`).
    """
    if event.event_type in OWN_EVENTS:
        return None
    if event.event_type in CODE_EVENTS and event.access_code_id:
        return "code", event.access_code_id
    if event.event_type in DEVICE_EVENTS and event.device_id:
        return "device", event.device_id
    return None


def _epoch_ms(occurred_at: str | None) -> str:
    """An event's occurred_at as milliseconds since 1970 ('' when it has none we can read)."""
    try:
        moment = datetime.fromisoformat((occurred_at or "").replace("Z", "+00:00"))
    except ValueError:
        return ""
    return str(int(moment.timestamp() * 1000)) if moment.tzinfo is not None else ""


def _summary(event: SeamEvent) -> str:
    """What is kept of the event: its routing fields, never its PIN."""
    kept = event.model_dump(exclude={"event_id"}, exclude_none=True)
    return json.dumps(kept, separators=(",", ":"))


def _texts(values: list[bytes | str]) -> tuple[str, ...]:
    return tuple(_text(v) for v in values)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
