"""Seam's events: emitted lazily, exactly once per transition, as the sandbox clock passes it.

Planned transitions (scheduled, set, faults, removal, device offline windows) wait in a heap;
`sync(now)` emits every one due. Writes emit theirs at once (`record`), after a `sync` at the
same instant, so the log is in occurred_at order and event ids (a seeded stream, drawn in that
order) are the same for the same writes. `created_at` = `occurred_at` (sandbox time).
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from seam_sandbox.codes import AccessCode
from seam_sandbox.faults import DeviceFaults, Timeline, iso
from seam_sandbox.transitions import planned

CONNECTED_ACCOUNT_ID = "sandbox_connected_account"
DISCONNECT_CODES = frozenset({"account_disconnected", "hub_disconnected", "device_disconnected"})
_ISSUE_FIELDS = ("error_code", "warning_code", "message", "created_at")
Event = dict[str, Any]
# A code's fields an update or the keypad can change, before the change.
Snapshot = tuple[str, str | None, datetime | None, datetime | None]


def snapshot(code: AccessCode) -> Snapshot:
    return code.code, code.name, code.starts_at, code.ends_at


class EventLog:
    def __init__(
        self,
        workspace_id: str,
        timeline: Timeline,
        faults: dict[str, DeviceFaults],
        seed: int,
    ) -> None:
        self._workspace_id, self._tl, self._faults = workspace_id, timeline, faults
        self._rng = random.Random(f"{seed}:events")
        self._seq = itertools.count()
        # (at, seq, subject id, plan version, event type, transition key)
        self._heap: list[tuple[float, int, str, int, str, str]] = []
        self._version: dict[str, int] = {}
        self._done: dict[str, set[str]] = {}
        self._codes: dict[str, AccessCode] = {}
        self.events: list[Event] = []
        self._times: list[float] = []
        self._by_id: dict[str, Event] = {}
        self.listeners: list[Callable[[Event, float], None]] = []  # (event, at)
        for device_id, device_faults in faults.items():
            self._plan_device(device_id, device_faults)

    # -- producing -------------------------------------------------------------------------
    def sync(self, now: float) -> None:
        """Emit every planned transition due by `now`, in time order."""
        while self._heap and self._heap[0][0] <= now:
            at, _, subject, version, event_type, key = heapq.heappop(self._heap)
            if self._version.get(subject, 0) != version or key in self._done[subject]:
                continue  # re-planned since, or already happened
            self._done[subject].add(key)
            code = self._codes.get(subject)
            if code is None:
                self._emit(at, event_type, self._device_fields(subject, key, at))
            else:
                self._emit(at, event_type, self._code_fields(code, event_type, at))

    def plan(self, code: AccessCode, now: float, skip: Iterable[str] = ()) -> None:
        """(Re-)plan a code's coming transitions from its current plan; past ones stay done.

        `skip`: transition keys that happened before Seam told anyone (a pulled backup was
        on the lock already), so they are never emitted."""
        self.sync(now)
        self._codes[code.access_code_id] = code
        subject = code.access_code_id
        version = self._version[subject] = self._version.get(subject, 0) + 1
        done = self._done.setdefault(subject, set())
        done.update(skip)
        for t in planned(code, self._faults[code.device_id], self._tl):
            if t.key not in done:
                entry = (max(t.at, now), next(self._seq), subject, version, t.event_type, t.key)
                heapq.heappush(self._heap, entry)

    def retire(self, code: AccessCode, now: float) -> None:
        """The code left Seam outside its plan (deleted at the lock): nothing more of it."""
        self.sync(now)
        self._version[code.access_code_id] = self._version.get(code.access_code_id, 0) + 1

    def record(self, now: float, event_type: str, code: AccessCode, **fields: Any) -> Event:
        """Emit an access-code event happening now (a write, or a change made at the lock)."""
        self.sync(now)
        return self._emit(now, event_type, self._code_fields(code, event_type, now) | fields)

    def record_device(self, now: float, event_type: str, device_id: str, **fields: Any) -> Event:
        self.sync(now)
        base = {"device_id": device_id, "connected_account_id": CONNECTED_ACCOUNT_ID}
        return self._emit(now, event_type, base | fields)

    def updated(self, code: AccessCode, before: Snapshot, now: float, outside: bool) -> None:
        """`changed`, then `code_changed` / `name_changed` / `time_frame_changed`, for a change."""
        after = snapshot(code)
        names = ("code", "name", "starts_at", "ends_at")
        old = {k: _text(v) for k, v in zip(names, before, strict=True)}
        new = {k: _text(v) for k, v in zip(names, after, strict=True)}
        props = [k for k in names if old[k] != new[k]]
        if not props:
            return
        changed = [{"property": k, "from": old[k], "to": new[k]} for k in props]
        self.record(now, "access_code.changed", code, changed_properties=changed)
        source = "at the lock, outside Seam" if outside else "through the Seam API"
        for event_type, keys, what in _SPECIFIC_CHANGES:
            if any(k in props for k in keys):
                self.record(
                    now,
                    f"access_code.{event_type}",
                    code,
                    **{"from": {k: old[k] for k in keys}, "to": {k: new[k] for k in keys}},
                    description=f"{what} changed {source}",
                )

    def _emit(self, at: float, event_type: str, fields: Event) -> Event:
        stamp = self._tl.iso(at)
        event: Event = {
            "event_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            "event_type": event_type,
            "workspace_id": self._workspace_id,
            "created_at": stamp,
            "occurred_at": stamp,
        } | fields
        self.events.append(event)
        self._times.append(at)
        self._by_id[event["event_id"]] = event
        for listener in self.listeners:
            listener(event, at)
        return event

    # -- payloads --------------------------------------------------------------------------
    def _code_fields(self, code: AccessCode, event_type: str, at: float) -> Event:
        fields: Event = {
            "access_code_id": code.access_code_id,
            "device_id": code.device_id,
            "connected_account_id": CONNECTED_ACCOUNT_ID,
        }
        if event_type in _CARRIES_CODE:
            fields["code"] = code.code
        if event_type in _CARRIES_ISSUES:
            rendered = code.render(at, self._tl, self._faults[code.device_id])
            fields |= _issues(rendered["errors"], rendered["warnings"])
        return fields

    def _plan_device(self, device_id: str, faults: DeviceFaults) -> None:
        subject = f"device:{device_id}"
        self._done[subject] = set()
        for i, fault in enumerate(faults.spec.faults):
            if fault.kind != "device_offline" or fault.duration is None:
                continue
            for at, kind in (
                (fault.start, "disconnected"),
                (fault.start + fault.duration, "connected"),
            ):
                key = f"{kind}:{fault.code}:{i}"
                entry = (at, next(self._seq), subject, 0, f"device.{kind}", key)
                heapq.heappush(self._heap, entry)

    def _device_fields(self, subject: str, key: str, at: float) -> Event:
        device_id = subject.removeprefix("device:")
        fields: Event = {"device_id": device_id, "connected_account_id": CONNECTED_ACCOUNT_ID}
        if not self._faults[device_id].offline(at):
            return fields
        return fields | disconnect_fields(key.split(":")[1], self._tl.iso(at))

    # -- reading ---------------------------------------------------------------------------
    def get(self, event_id: str) -> Event | None:
        return self._by_id.get(event_id)

    def between(self, low: float, high: float | None, inclusive_low: bool) -> Iterable[Event]:
        """Events with occurred_at from `low` (inclusive or not) up to `high` (exclusive)."""
        start = (bisect_left if inclusive_low else bisect_right)(self._times, low)
        stop = len(self._times) if high is None else bisect_left(self._times, high)
        return self.events[start:stop]


def disconnect_fields(error: str, created_at: str) -> Event:
    """`device.disconnected`'s own fields; its `error_code` is one of Seam's three."""
    code = error if error in DISCONNECT_CODES else "device_disconnected"
    issue = {
        "error_code": "device_offline",
        "message": "Device is offline",
        "created_at": created_at,
    }
    return {
        "error_code": code,
        "device_errors": [issue | {"created_at": created_at}],
        "device_warnings": [],
        "connected_account_errors": [],
        "connected_account_warnings": [],
    }


_CARRIES_CODE = frozenset(
    {"access_code.scheduled_on_device", "access_code.set_on_device", "access_code.deleted"}
)
_SPECIFIC_CHANGES = (
    ("code_changed", ("code",), "Code"),
    ("name_changed", ("name",), "Name"),
    ("time_frame_changed", ("starts_at", "ends_at"), "Time frame"),
)
_CARRIES_ISSUES = frozenset(
    {"access_code.delay_in_setting_on_device", "access_code.failed_to_set_on_device"}
)


def _issues(errors: list[dict[str, Any]], warnings: list[dict[str, Any]]) -> Event:
    def slim(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: e[k] for k in _ISSUE_FIELDS if k in e} for e in entries]

    device = [e for e in errors if e.get("is_device_error")]
    own = [e for e in errors if not e.get("is_device_error")]
    return {
        "access_code_errors": slim(own),
        "access_code_warnings": slim(warnings),
        "device_errors": slim(device),
        "device_warnings": [],
        "connected_account_errors": [],
        "connected_account_warnings": [],
    }


def _text(value: str | datetime | None) -> str | None:
    return iso(value) if isinstance(value, datetime) else value
