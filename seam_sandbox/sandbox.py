"""`Sandbox`: one fake Seam workspace (state, limits, faults, accounting) and its ASGI app."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
from starlette.types import ASGIApp

from seam_sandbox import outside
from seam_sandbox.app import SeamApp
from seam_sandbox.clock import SandboxClock
from seam_sandbox.delivery import Deliverer
from seam_sandbox.faults import Chaos
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.scenario import Scenario
from seam_sandbox.state import SandboxState
from seam_sandbox.stats import RequestStats


class Sandbox:
    """A fake Seam driven by a `Scenario`, deterministic for a given `seed`.

    `clock` defaults to a `SandboxClock` running at `scenario.speed`; pass one to control time
    (`sb.clock.advance(...)`). `monotonic` is the real-time source of rate limits and stats.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        seed: int = 0,
        clock: SandboxClock | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scenario = scenario or Scenario()
        self.seed = seed
        self.clock = clock or SandboxClock(speed=self.scenario.speed)
        self._state = SandboxState(self.scenario, seed, self.clock)
        self._requests = RequestStats(monotonic)
        self._app = SeamApp(
            self._state,
            RateLimiter(self.scenario.rate_limits, monotonic),
            self._requests,
            Chaos(self.scenario, random.Random(f"{seed}:chaos")),
            self.stats,
            seed,
        )
        self._deliverer = Deliverer(self._state, list(self.scenario.webhook_faults), seed)

    @property
    def app(self) -> ASGIApp:
        return self._app

    @property
    def api_key(self) -> str:
        return self.scenario.api_key

    @property
    def device_ids(self) -> list[str]:
        return list(self._state.devices)

    def stats(self) -> dict[str, Any]:
        """The same accounting as `GET /_sandbox/stats`."""
        return self._requests.snapshot() | self._state.code_summary()

    def codes_on(self, device_id: str) -> list[dict[str, Any]]:
        """The live access codes on a device, rendered as the API would answer them."""
        self._state.device(device_id)
        return [self._state.render(c) for c in self._state.live_codes(device_id)]

    def mark_scheduled_at(self, access_code_id: str) -> datetime | None:
        """When the code is (or will be) scheduled on its device; None if never or unknown.

        Known for deleted and expired codes too, so detection lag can be measured afterwards.
        """
        code = self._state.codes.get(access_code_id)
        if code is None or code.scheduled_at is None:
            return None
        return self._state.timeline.at(code.scheduled_at)

    # -- events and webhooks ---------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """Every event so far (due ones emitted first), in occurred_at order."""
        self._state.events.sync(self._state.now())
        return list(self._state.events.events)

    async def deliver_once(self) -> int:
        """Send every webhook attempt due on the sandbox clock now; returns how many were sent."""
        return await self._deliverer.deliver_once()

    @asynccontextmanager
    async def delivering(self, interval: float = 0.05) -> AsyncIterator[None]:
        """Deliver webhooks in the background (every `interval` real seconds) while inside."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._deliverer.run, interval)
            try:
                yield
            finally:
                group.cancel_scope.cancel()

    async def deliver_forever(self, interval: float = 0.05) -> None:
        """Deliver webhooks until cancelled (what `server.serve` runs next to the API)."""
        await self._deliverer.run(interval)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt so far: webhook_id, event_id, event_type, msg_id, attempt,
        at (sandbox ISO time it was due), outcome (HTTP status or a word)."""
        timeline = self._state.timeline
        return [vars(r) | {"at": timeline.iso(r.at)} for r in self._deliverer.records]

    def pending_deliveries(self) -> int:
        return self._deliverer.pending()

    # -- changes made outside codeprov -----------------------------------------------------
    def delete_outside(self, access_code_id: str) -> None:
        """Delete a code at the lock (Seam: `access_code.deleted_external_to_seam`)."""
        outside.delete_code(self._state, access_code_id)

    def change_pin_at_keypad(self, access_code_id: str, pin: str) -> None:
        """Change a code's PIN at the keypad (`modified_external_to_seam`, `code_changed`)."""
        outside.change_pin(self._state, access_code_id, pin)

    def take_offline(self, device_id: str, error_code: str = "device_disconnected") -> None:
        """Take a lock offline until `bring_online` (`device.disconnected`)."""
        outside.take_offline(self._state, device_id, error_code)

    def bring_online(self, device_id: str) -> None:
        """Bring a lock taken offline back (`device.connected`)."""
        outside.bring_online(self._state, device_id)


__all__ = ["Sandbox"]
