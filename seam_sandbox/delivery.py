"""Webhook delivery as Svix does it: signed POSTs, retried on Svix's schedule, with faults.

Every emitted event is queued for each webhook that wants it, due at its occurred_at (sandbox
time); `deliver_once` sends what is due, in due order, one request at a time. A non-2xx answer
or a failed connection schedules the next attempt on `RETRY_SCHEDULE` (sandbox seconds after
the previous attempt's due time), so a fast or pushed clock runs hours of retries in seconds.
The `svix-timestamp` is real wall time: receivers check it against their own clock.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import string
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
from svix.webhooks import Webhook as SvixWebhook

from seam_sandbox.events import Event
from seam_sandbox.scenario import WebhookFault
from seam_sandbox.state import SandboxState
from seam_sandbox.webhooks import Webhook, is_loopback

# Svix: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then the message has failed.
RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_SENDS_PER_PASS = 200
SEND_TIMEOUT = 5.0  # real seconds per request
_BASE62 = string.digits + string.ascii_letters


@dataclass(order=True)
class Attempt:
    due: float
    seq: int
    webhook_id: str = field(compare=False)
    msg_id: str = field(compare=False)
    event: Event = field(compare=False)
    number: int = field(default=0, compare=False)  # index into RETRY_SCHEDULE
    copies: int = field(default=1, compare=False)


@dataclass(frozen=True)
class DeliveryRecord:
    """One attempt (or a decision not to send): outcome is the HTTP status or a word."""

    webhook_id: str
    event_id: str
    event_type: str
    msg_id: str
    attempt: int  # 1-based
    at: float  # sandbox seconds since start
    outcome: int | str  # status | "connection_error" | "endpoint_down" | "dropped" | "gave_up"


class Deliverer:
    def __init__(self, state: SandboxState, faults: list[WebhookFault], seed: int) -> None:
        self._state, self._faults = state, faults
        self._ids = random.Random(f"{seed}:svix")
        self._shuffle = random.Random(f"{seed}:out_of_order")
        self._seq = itertools.count()
        self._queue: list[Attempt] = []
        self._held: defaultdict[tuple[int, str], list[Attempt]] = defaultdict(list)
        self._matched: defaultdict[tuple[int, str], int] = defaultdict(int)
        self._client: httpx.AsyncClient | None = None
        self.records: list[DeliveryRecord] = []
        state.events.listeners.append(self._on_event)

    # -- queueing --------------------------------------------------------------------------
    def _on_event(self, event: Event, at: float) -> None:
        for hook in self._state.webhooks.all():
            if hook.wants(event["event_type"]):
                msg_id = "msg_" + "".join(self._ids.choice(_BASE62) for _ in range(27))
                self._plan(Attempt(at, next(self._seq), hook.webhook_id, msg_id, event), at)

    def _plan(self, attempt: Attempt, at: float) -> None:
        """Apply the delivery faults to a new message, then queue (or hold, or drop) it."""
        event_type = attempt.event["event_type"]
        for i, fault in enumerate(self._faults):
            if not fault.active(at, event_type) or fault.kind == "endpoint_down":
                continue
            if fault.kind == "out_of_order":
                self._hold(i, fault, attempt)
                return
            if not self._selected(i, fault, attempt.webhook_id):
                continue
            if fault.kind == "dropped":
                self._record(attempt, "dropped")
                return
            if fault.kind == "late":
                attempt.due += fault.delay
            elif fault.kind == "duplicated":
                attempt.copies = 2
        heapq.heappush(self._queue, attempt)

    def _selected(self, index: int, fault: WebhookFault, webhook_id: str) -> bool:
        self._matched[(index, webhook_id)] += 1
        return fault.every_nth is None or self._matched[(index, webhook_id)] % fault.every_nth == 0

    def _hold(self, index: int, fault: WebhookFault, attempt: Attempt) -> None:
        held = self._held[(index, attempt.webhook_id)]
        held.append(attempt)
        if len(held) >= fault.window:
            self._release((index, attempt.webhook_id), attempt.due)

    def _release(self, key: tuple[int, str], at: float) -> None:
        """Send a held run all at `at`, in a seeded order that is never the original one."""
        held = self._held.pop(key)
        order = list(held)
        self._shuffle.shuffle(order)
        if order == held:
            order.reverse()
        for attempt in order:
            attempt.due, attempt.seq = max(attempt.due, at), next(self._seq)
            heapq.heappush(self._queue, attempt)

    def _release_expired(self, now: float) -> None:
        for key, held in list(self._held.items()):
            if held and held[0].due + self._faults[key[0]].hold <= now:
                self._release(key, held[0].due + self._faults[key[0]].hold)

    # -- sending ---------------------------------------------------------------------------
    async def deliver_once(self) -> int:
        """Emit due events, then send every attempt due by now (at most MAX_SENDS_PER_PASS)."""
        now = self._state.now()
        self._state.events.sync(now)
        self._release_expired(now)
        if self._client is not None:
            return await self._send_due(self._client, now)
        async with _client() as client:
            return await self._send_due(client, now)

    async def run(self, interval: float) -> None:
        """Deliver for ever, every `interval` real seconds (cancel to stop)."""
        async with _client() as client:
            self._client = client
            try:
                while True:
                    await self.deliver_once()
                    await anyio.sleep(interval)
            finally:
                self._client = None

    async def _send_due(self, client: httpx.AsyncClient, now: float) -> int:
        sent = 0
        while self._queue and self._queue[0].due <= now and sent < MAX_SENDS_PER_PASS:
            attempt = heapq.heappop(self._queue)
            hook = self._state.webhooks.find(attempt.webhook_id)
            if hook is None:
                continue  # deleted since: Svix stops sending to a deleted endpoint
            outcome = await self._attempt(client, hook, attempt)
            sent += 1
            if _ok(outcome):
                for _ in range(attempt.copies - 1):
                    await self._attempt(client, hook, attempt)
            else:
                self._retry(attempt)
        return sent

    async def _attempt(self, client: httpx.AsyncClient, hook: Webhook, attempt: Attempt) -> Any:
        if any(
            f.kind == "endpoint_down" and f.active(attempt.due, attempt.event["event_type"])
            for f in self._faults
        ):
            outcome: int | str = "endpoint_down"
        else:
            outcome = await _post(client, hook, attempt)
        self._record(attempt, outcome)
        return outcome

    def _retry(self, attempt: Attempt) -> None:
        if attempt.number + 1 >= len(RETRY_SCHEDULE):
            self._record(attempt, "gave_up")
            return
        attempt.number += 1
        attempt.due += RETRY_SCHEDULE[attempt.number]
        attempt.seq = next(self._seq)
        heapq.heappush(self._queue, attempt)

    def _record(self, attempt: Attempt, outcome: int | str) -> None:
        event = attempt.event
        self.records.append(
            DeliveryRecord(
                attempt.webhook_id,
                event["event_id"],
                event["event_type"],
                attempt.msg_id,
                attempt.number + 1,
                attempt.due,
                outcome,
            )
        )

    def pending(self) -> int:
        """Attempts queued or held, not yet sent."""
        return len(self._queue) + sum(len(h) for h in self._held.values())


async def _post(client: httpx.AsyncClient, hook: Webhook, attempt: Attempt) -> int | str:
    if not is_loopback(hook.url):  # checked at create too: never send anywhere else
        return "connection_error"
    body = json.dumps(attempt.event, separators=(",", ":"))
    sent_at = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": "Svix-Webhooks/1.0 (sandbox)",
        "svix-id": attempt.msg_id,
        "svix-timestamp": str(int(sent_at.timestamp())),
        "svix-signature": SvixWebhook(hook.secret).sign(attempt.msg_id, sent_at, body),
    }
    try:
        response = await client.post(hook.url, content=body.encode(), headers=headers)
    except httpx.HTTPError:
        return "connection_error"
    return response.status_code


def _ok(outcome: int | str) -> bool:
    return isinstance(outcome, int) and 200 <= outcome < 300


def _client() -> httpx.AsyncClient:
    # No proxies from the environment (they could send loopback traffic elsewhere); no redirects.
    return httpx.AsyncClient(trust_env=False, timeout=SEND_TIMEOUT, follow_redirects=False)
