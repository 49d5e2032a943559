"""The intake stream: any booking system feeds codeprov with one plain `XADD`.

    XADD codeprov:intake * booking_id B123 device_id lock-7 starts_at 2026-12-01T15:00:00Z \\
         ends_at 2026-12-04T11:00:00Z action provision revision 7

Workers read it through the consumer group `codeprov` (at-least-once). Each entry goes through
the same code path as `codeprov enqueue` (idempotent per stay and revision), then is
acknowledged. Invalid entries go to `codeprov:intake:dead` with the reason, and are
acknowledged: they never block the entries behind them. Entries left pending by a dead
consumer are claimed after `CODEPROV_INTAKE_CLAIM_IDLE` seconds (XAUTOCLAIM). The stream is
trimmed only below the oldest entry still pending or undelivered (XTRIM MINID).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError, ResponseError

from jobs.enqueue import apply_message
from jobs.payload import parse_message
from worker.errors import InvalidInput
from worker.logs import get_logger

GROUP = "codeprov"
Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class Intake:
    redis: ArqRedis
    consumer: str
    clock: Callable[[], datetime]
    prefix: str = "codeprov"
    batch: int = 100
    claim_idle: float = 60.0
    block: float = 1.0
    _claim_from: bytes = field(default=b"0-0", init=False)

    @property
    def key(self) -> str:
        return f"{self.prefix}:intake"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:intake:dead"

    async def ensure_group(self) -> None:
        """Create the group at the stream's start: entries written before any worker count."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)

    async def read_once(self, *, block: bool = True) -> int:
        """Claim stale entries, read new ones, handle them all; how many were handled."""
        handled = await self._claim()
        timeout = int(self.block * 1000) if block else None
        answer = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.key: ">"}, count=self.batch, block=timeout
        )
        for _, entries in answer or []:
            for entry in entries:
                await self.handle(entry)
                handled += 1
        return handled

    async def drain(self) -> int:
        """Handle everything there is now (for `worker --burst`)."""
        total = 0
        while (n := await self.read_once(block=False)) > 0:
            total += n
        await self.trim()
        return total

    async def run(self) -> None:
        """Consume until cancelled; Redis trouble is logged and retried, never fatal."""
        await self.ensure_group()
        while True:
            try:
                if await self.read_once() == 0:
                    await self.trim()
            except (RedisError, OSError) as exc:
                get_logger().warning("intake.redis_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def handle(self, entry: Entry) -> None:
        entry_id, raw = entry
        try:
            message = parse_message(decode(raw), now=self.clock())
        except InvalidInput as exc:
            await self._dead_letter(entry_id, raw, str(exc))
            return
        result = await apply_message(self.redis, message, prefix=self.prefix, now=self.clock())
        if result.result == "invalid":
            await self._dead_letter(entry_id, raw, result.error or "invalid")
            return
        await self.redis.xack(self.key, GROUP, entry_id)

    async def _dead_letter(self, entry_id: bytes, raw: dict[bytes, bytes], reason: str) -> None:
        fields: dict[Any, Any] = {b"reason": reason.encode(), b"entry_id": entry_id}
        fields.update({b"field:" + k: v for k, v in list(raw.items())[:50]})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_key, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.key, GROUP, entry_id)
            await pipe.execute()
        get_logger().warning("intake.rejected", entry_id=entry_id.decode(), reason=reason)

    async def _claim(self) -> int:
        """Take over entries another consumer read and never acknowledged (it died)."""
        answer = await self.redis.xautoclaim(
            self.key,
            GROUP,
            self.consumer,
            int(self.claim_idle * 1000),
            start_id=self._claim_from,
            count=self.batch,
        )
        self._claim_from, entries = answer[0], answer[1]
        for entry in entries:
            if entry[1] is not None:  # None: deleted (trimmed) while pending
                await self.handle(entry)
        return len(entries)

    async def trim(self) -> None:
        """Drop acknowledged entries only: below the oldest pending or undelivered one."""
        groups = await self.redis.xinfo_groups(self.key)
        floors: list[bytes] = []
        for group in groups:
            pending = await self.redis.xpending(self.key, group["name"])
            floors.append(
                pending["min"] if pending["pending"] else _next(group["last-delivered-id"])
            )
        if floors:
            floor = min(floors, key=_id_key)
            await self.redis.xtrim(self.key, minid=floor)


def decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    """A flat map of UTF-8 strings; empty values are absent fields."""
    try:
        fields = {k.decode("utf-8"): v.decode("utf-8") for k, v in raw.items()}
    except UnicodeDecodeError:
        raise InvalidInput("entry is not UTF-8 text") from None
    return {k: v for k, v in fields.items() if v != ""}


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _next(entry_id: bytes | str) -> bytes:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}".encode()
