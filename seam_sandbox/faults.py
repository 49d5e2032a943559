"""Fault arithmetic on the sandbox timeline: when programming finishes, which errors show.

Instants are sandbox seconds since the sandbox started (`Timeline` converts to datetimes), so a
code's whole life can be computed at creation and read lazily: no background tasks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from seam_sandbox.scenario import TERMINAL_KINDS, TRANSIENT_KINDS, DeviceSpec, Drop, Fault, Scenario

_MESSAGES = {
    "device_offline": "Device is offline",
    "delay_in_setting_on_device": "Code was not set on the device as quickly as expected",
    "failed_to_set_on_device": "Failed to set code on device; Seam will retry",
    "no_space_for_access_code_on_device": "No space for access code on device",
    "duplicate_code_on_device": "Duplicate code on device",
    "empty_backup_access_code_pool": "No backup access codes left in the pool",
    "using_backup_access_code": "A backup access code was pulled for this access code",
}
# Which flag each error carries, per Seam's OpenAPI spec (access code errors: the rest).
_DEVICE_ERRORS = frozenset(
    {
        "device_offline",
        "device_disconnected",
        "hub_disconnected",
        "bridge_disconnected",
        "subscription_required",
        "empty_backup_access_code_pool",
    }
)
_ACCOUNT_ERRORS = frozenset({"account_disconnected"})


@dataclass(frozen=True)
class Timeline:
    """Converts between datetimes and sandbox seconds since `t0`."""

    t0: datetime

    def secs(self, moment: datetime) -> float:
        return (moment - self.t0).total_seconds()

    def at(self, secs: float) -> datetime:
        return self.t0 + timedelta(seconds=secs)

    def iso(self, secs: float) -> str:
        return iso(self.at(secs))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finish_time(begin: float, latency: float, faults: list[Fault]) -> float:
    """When `latency` seconds of programming are done, starting at `begin`, paused by faults."""
    windows = sorted(
        (f.start, f.start + (f.duration or 0.0)) for f in faults if f.kind in TRANSIENT_KINDS
    )
    t, remaining = begin, latency
    for start, end in windows:
        if end <= t:
            continue
        if start > t:
            if t + remaining <= start:
                return t + remaining
            remaining -= start - t
        t = end
    return t + remaining


def issue(code: str, created_at: str, *, warning: bool = False) -> dict[str, Any]:
    """An entry of a code's `errors` (or `warnings`), with Seam's flags."""
    device_error, account_error = code in _DEVICE_ERRORS, code in _ACCOUNT_ERRORS
    key = "warning_code" if warning else "error_code"
    entry: dict[str, Any] = {
        key: code,
        "message": _MESSAGES.get(code, code.replace("_", " ").capitalize()),
        "created_at": created_at,
    }
    if not warning:
        entry |= {
            "is_access_code_error": not (device_error or account_error),
            "is_device_error": device_error,
            "is_connected_account_error": account_error,
        }
    return entry


@dataclass
class DeviceFaults:
    """A device's faults plus the counters that `count`-limited faults need."""

    spec: DeviceSpec
    _used: dict[int, int] = field(default_factory=dict)
    # Offline windows opened by `Sandbox.take_offline` (not the scenario's): shown on the device
    # and its codes, but they do not re-plan programming already computed.
    outside: list[Fault] = field(default_factory=list)

    def _take(self, index: int, fault: Fault) -> bool:
        used = self._used.get(index, 0)
        if fault.count is not None and used >= fault.count:
            return False
        self._used[index] = used + 1
        return True

    def forces_duplicate(self, now: float) -> bool:
        """Whether this create must answer 409 (the `duplicate_access_code` fault)."""
        return any(
            self._take(i, f)
            for i, f in enumerate(self.spec.faults)
            if f.kind == "duplicate_access_code" and f.active(now)
        )

    def terminal_error_for_new_code(self, now: float) -> str | None:
        for i, f in enumerate(self.spec.faults):
            if f.kind in TERMINAL_KINDS and f.active(now) and self._take(i, f):
                return f.code
        return None

    def finish(self, begin: float, latency: float) -> float:
        return finish_time(begin, latency, self.spec.faults)

    def offline(self, now: float) -> list[Fault]:
        planned = [f for f in self.spec.faults if f.kind == "device_offline" and f.active(now)]
        return planned + [f for f in self.outside if f.active(now)]

    def issues(self, now: float, pending: bool, tl: Timeline) -> tuple[list[Any], list[Any]]:
        """Errors and warnings a code shows at `now`; `pending` = its creation is under way."""
        errors = [issue(f.code, tl.iso(f.start)) for f in self.offline(now)]
        warnings: list[Any] = []
        for f in self.spec.faults:
            if not (pending and f.active(now)):
                continue
            if f.kind == "failed_to_set_on_device":
                errors.append(issue(f.code, tl.iso(f.start)))
            elif f.kind == "delay_in_setting_on_device":
                warnings.append(issue(f.code, tl.iso(f.start), warning=True))
        return errors, warnings


class Chaos:
    """Scenario-wide faults per request: outages, slow answers, dropped connections."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self._scenario = scenario
        self._rng = rng
        self._seen: dict[int, int] = {}

    def outage(self, now: float, route: str) -> tuple[int, bool] | None:
        """(status, seam_body) of an outage covering this request, if any."""
        for outage in self._scenario.outages:
            if outage.active(now, route):
                return outage.status, outage.body == "seam"
        return None

    def delay(self, route: str, device_id: str | None) -> float:
        return sum(
            s.seconds
            for s in self._scenario.slow
            if (s.routes is None or route in s.routes)
            and (s.devices is None or device_id in s.devices)
        )

    def drop(self, route: str) -> Drop | None:
        """The drop rule that fires for this request, if any (counts every matching request)."""
        fired: Drop | None = None
        for i, rule in enumerate(self._scenario.drops):
            if rule.routes is not None and route not in rule.routes:
                continue
            self._seen[i] = self._seen.get(i, 0) + 1
            nth = rule.every_nth is not None and self._seen[i] % rule.every_nth == 0
            chance = rule.probability > 0 and self._rng.random() < rule.probability
            if fired is None and (nth or chance):
                fired = rule
        return fired
