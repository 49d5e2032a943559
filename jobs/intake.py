"""The intake stream: any booking system feeds codeprov with one plain `XADD`.

    XADD codeprov:intake * booking_id B123 device_id lock-7 starts_at 2026-12-01T15:00:00Z \\
         ends_at 2026-12-04T11:00:00Z action provision revision 7

Workers read it through the consumer group `codeprov` (at-least-once). Each entry goes through
the same code path as `codeprov enqueue` (idempotent per stay and revision), then is
acknowledged. An entry that cannot be handled (invalid, or any exception of its own) goes to
`codeprov:intake:dead` with the reason, and is acknowledged: it never blocks the entries
behind it. Redis trouble is not the entry's fault: the entry stays pending. Entries left
pending by a dead consumer are claimed after `CODEPROV_INTAKE_CLAIM_IDLE` seconds
(XAUTOCLAIM). A group that is gone (DEL, FLUSHDB, an older snapshot) is created again. The
stream is trimmed only below the oldest entry still pending or undelivered (XTRIM MINID).
`serve` runs the consumer for ever: a crash is logged, reported and restarted with backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import ConnectionError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from jobs.enqueue import apply_message
from jobs.payload import parse_message
from worker.errors import InvalidInput
from worker.limiter import backoff
from worker.logs import get_logger
from worker.supervise import Report, supervise

GROUP = "codeprov"
Entry = tuple[bytes, dict[bytes, bytes]]
# An outage or a failover: wait and retry. Any other Redis error (WRONGTYPE on the stream, an
# ACL refusal) will not pass by itself: the consumer crashes, and `serve` says so loudly.
TRANSIENT = (ConnectionError, RedisTimeout, ReadOnlyError, OSError)
MAX_REASON = 300


@dataclass
class Intake:
    redis: ArqRedis
    consumer: str
    clock: Callable[[], datetime]
    prefix: str = "codeprov"
    batch: int = 100
    claim_idle: float = 60.0
    block: float = 1.0
    restart_base: float = 1.0  # first pause after a crash; doubles up to restart_cap
    restart_cap: float = 60.0
    _claim_from: bytes = field(default=b"0-0", init=False)

    @property
    def key(self) -> str:
        return f"{self.prefix}:intake"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:intake:dead"

    async def ensure_group(self) -> None:
        """Create the group at the stream's start: entries written before any worker count."""
        try:
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # it exists; anything else (WRONGTYPE) is real
                raise

    async def read_once(self, *, block: bool = True) -> int:
        """Claim stale entries, read new ones, handle them all; how many were handled."""
        try:
            return await self._read(block)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        await self._recreate_group()
        return await self._read(block)

    async def drain(self) -> int:
        """Handle everything there is now (for `worker --burst`)."""
        total = 0
        while (n := await self.read_once(block=False)) > 0:
            total += n
        await self.trim()
        return total

    async def serve(self, report: Report) -> None:
        """`run` until cancelled; a crash is logged, reported, and restarted with backoff."""
        await supervise("intake", "intake consumer", self.run, report, base=self.restart_base,
                        cap=self.restart_cap)

    async def run(self, on_running: Callable[[], None] = lambda: None) -> None:
        """Consume until cancelled; a Redis outage is logged and retried with backoff.

        `on_running` is called after each round that went through.
        """
        failures, ready = 0, False
        while True:
            try:
                if not ready:
                    await self.ensure_group()
                    ready = True
                if await self.read_once() == 0:
                    await self.trim()
            except TRANSIENT as exc:
                delay = backoff(failures, base=0.5, cap=30.0)
                failures += 1
                get_logger().warning(
                    "intake.redis_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            on_running()

    async def handle(self, entry: Entry) -> None:
        """Apply one entry and acknowledge it, or dead-letter it: never raises for the entry."""
        entry_id, raw = entry
        try:
            reason = await self._apply(raw)
        except (RedisError, OSError):
            raise  # Redis's trouble, not the entry's: it stays pending, to be tried again
        except Exception as exc:  # a bug on this entry must not stop the entries behind it
            reason = f"internal error ({type(exc).__name__}) handling the entry: see the worker log"
            await self._dead_letter(entry_id, raw, reason, exc)
            return
        if reason is not None:
            await self._dead_letter(entry_id, raw, reason)
            return
        await self.redis.xack(self.key, GROUP, entry_id)

    async def _apply(self, raw: dict[bytes, bytes]) -> str | None:
        """None if applied; else why the entry is rejected."""
        try:
            message = parse_message(decode(raw), now=self.clock())
            result = await apply_message(
                self.redis, message, prefix=self.prefix, now=self.clock()
            )
        except InvalidInput as exc:  # the entry, or the stored record it touches
            return str(exc)
        return (result.error or "invalid") if result.result == "invalid" else None

    async def _dead_letter(
        self,
        entry_id: bytes,
        raw: dict[bytes, bytes],
        reason: str,
        exc: BaseException | None = None,
    ) -> None:
        reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
        fields: dict[Any, Any] = {b"reason": reason.encode(), b"entry_id": entry_id}
        fields.update({b"field:" + k: v for k, v in list(raw.items())[:50]})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_key, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.key, GROUP, entry_id)
            await pipe.execute()
        get_logger().warning(
            "intake.rejected", entry_id=entry_id.decode(), reason=reason, exc_info=exc or False
        )

    async def _read(self, block: bool) -> int:
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

    async def _recreate_group(self) -> None:
        """The group is gone (DEL, FLUSHDB, an older snapshot): what is in the stream is
        delivered again from its start, which is harmless (each entry is idempotent).
        """
        get_logger().warning("intake.group_recreated", stream=self.key, group=GROUP)
        self._claim_from = b"0-0"
        await self.ensure_group()

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
        alive = [entry for entry in entries if entry[1] is not None]
        for entry in alive:
            await self.handle(entry)
        if len(alive) < len(entries):
            await self._ack_deleted()
        return len(alive)

    async def _ack_deleted(self) -> None:
        """Entries deleted while pending (XDEL, a producer's MAXLEN): Redis 6.2 keeps their ids
        pending for ever, and XAUTOCLAIM hides them (None), so the trim floor would be stuck.
        They are ours now: acknowledge the ones the stream no longer has.
        """
        mine = await self.redis.xpending_range(
            self.key, GROUP, min="-", max="+", count=self.batch, consumername=self.consumer
        )
        ids = [p["message_id"] for p in mine]
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(self.key, entry_id, entry_id)
            found = await pipe.execute()
        gone = [entry_id for entry_id, hit in zip(ids, found, strict=True) if not hit]
        if gone:
            await self.redis.xack(self.key, GROUP, *gone)

    async def trim(self) -> None:
        """Drop acknowledged entries only: below the oldest pending or undelivered one."""
        try:
            groups = await self.redis.xinfo_groups(self.key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return  # deleted meanwhile: the next read creates it again
            raise
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
