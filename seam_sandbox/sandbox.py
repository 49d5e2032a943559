"""`Sandbox`: one fake Seam workspace (state, limits, faults, accounting) and its ASGI app."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.types import ASGIApp

from seam_sandbox.app import SeamApp
from seam_sandbox.clock import SandboxClock
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


__all__ = ["Sandbox"]
