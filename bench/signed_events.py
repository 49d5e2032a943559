"""The workload of `bench receiver`: waiting stays in Redis, and Seam events signed as Svix does.

The stays are written as a stay's commit leaves them (record, code and lock indexes, a check
queued days ahead), so an event about one of their codes wakes a check; the other events are
about codes of no stay of ours (`ignored_unmanaged`), as most of a shared workspace's are.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from redis import Redis
from svix.webhooks import Webhook

from jobs.payload import Stay
from jobs.records import Phase
from jobs.state import StayState, code_index_key, device_index_key
from worker.queue import job_id

__all__ = ["PREFIX", "SignedEvents", "seed_waiting_stays"]

PREFIX = "codeprov"
TYPES = ("access_code.set_on_device", "access_code.changed", "access_code.removed_from_device",
         "access_code.delay_in_setting_on_device", "access_code.modified_external_to_seam")


class SignedEvents:
    """Seam-shaped events, signed as Svix signs them, as raw HTTP/1.1 requests."""

    def __init__(self, secret: str, port: int, codes: list[str], indexed: float) -> None:
        self.webhook, self.port, self.codes, self.indexed = Webhook(secret), port, codes, indexed
        self.random = random.Random(0)
        self.sent = 0

    def signed(self, n: int) -> list[bytes]:
        at = datetime.now(UTC)  # signed just before firing: inside Svix's 5 minutes
        out = [self._request(self._body(), at) for _ in range(n)]
        self.sent += n
        return out

    def _body(self) -> str:
        mine = self.codes and self.random.random() < self.indexed
        code = self.random.choice(self.codes) if mine else f"ac_{uuid.uuid4()}"
        now = datetime.now(UTC).isoformat()
        return json.dumps({
            "event_id": str(uuid.uuid4()), "event_type": self.random.choice(TYPES),
            "workspace_id": "ws_bench", "created_at": now, "occurred_at": now,
            "access_code_id": code, "device_id": f"lock-{self.random.randrange(100)}",
            "connected_account_id": "ca_bench", "code": f"{self.random.randrange(10**6):06}",
        })

    def _request(self, body: str, at: datetime) -> bytes:
        msg_id = f"msg_{uuid.uuid4().hex}"
        head = (f"POST /webhooks/seam HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"User-Agent: Svix-Webhooks/1.0\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body.encode())}\r\nsvix-id: {msg_id}\r\n"
                f"svix-timestamp: {int(at.timestamp())}\r\n"
                f"svix-signature: {self.webhook.sign(msg_id, at, body)}\r\n\r\n")
        return (head + body).encode()


def seed_waiting_stays(redis: Redis, n: int) -> list[str]:
    """n stays waiting for their lock, each with a check queued days ahead: their code ids."""
    now = datetime.now(UTC)
    starts = now + timedelta(days=10)
    later = (time.time() + 9 * 86400) * 1000
    codes = []
    with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            stay = Stay(booking_id=f"B{i:05}", device_id=f"lock-{i % 100}", starts_at=starts,
                        ends_at=starts + timedelta(days=2))
            code = f"ac_{uuid.uuid4()}"
            state = StayState(stay=stay, state=Phase.WAITING, seq=1, access_code_id=code,
                              enqueued_at=now, updated_at=now)
            pipe.set(f"{PREFIX}:stay:{stay.booking_id}", state.model_dump_json())
            pipe.set(code_index_key(PREFIX, code), stay.booking_id)
            pipe.sadd(device_index_key(PREFIX, stay.device_id), stay.booking_id)
            pipe.zadd(f"{PREFIX}:queue", {job_id(stay.booking_id, 1, prefix=PREFIX): later})
            codes.append(code)
        pipe.execute()
    return codes
