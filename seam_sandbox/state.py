"""Devices and access codes of one sandbox, and the operations the routes perform on them.

Randomness comes from separate seeded streams (ids, PINs, latencies), so a read or a poll never
shifts what a later create draws: the same writes in the same order give the same codes.

Codes are kept twice: `codes` (every code ever created, by id, in creation order) and an index of
them per device, so a device's live codes (generate_code, create, update, list, PIN lookups) cost
O(codes on that lock), not O(all codes). `_store` is the only writer of both. A code never leaves
them: delete stamps `deleted_at` and expiry is `ends_at`, both judged lazily by `gone()` (deleted
and expired codes still answer `mark_scheduled_at`). Nor does a code change device: updates carry
no `device_id`, and a stay moving lock is a delete plus a create.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from seam_sandbox.clock import SandboxClock
from seam_sandbox.codes import AccessCode, Change, Mutation
from seam_sandbox.errors import SeamError, access_code_not_found, device_not_found
from seam_sandbox.errors import duplicate_access_code as duplicate
from seam_sandbox.events import EventLog, snapshot
from seam_sandbox.faults import DeviceFaults, Timeline, iso, issue
from seam_sandbox.scenario import DeviceSpec, Scenario
from seam_sandbox.validation import CreateInput, UpdateInput
from seam_sandbox.webhooks import WebhookRegistry

_JUST_IN_TIME_LEAD_HOURS = 1.0  # prefer_native_scheduling=false: Seam loads ~60 min ahead


@dataclass
class Device:
    spec: DeviceSpec
    faults: DeviceFaults


class SandboxState:
    def __init__(self, scenario: Scenario, seed: int, clock: SandboxClock) -> None:
        self.scenario = scenario
        self.clock = clock
        self.timeline = Timeline(clock.now())
        self.devices = {s.id: Device(s, DeviceFaults(s)) for s in scenario.device_specs()}
        self._codes: dict[str, AccessCode] = {}
        self._codes_by_device: dict[str, dict[str, AccessCode]] = {d: {} for d in self.devices}
        self._ordinal: dict[str, int] = {}  # creation order, for list cursors
        self.created_total = 0
        self._ids = random.Random(f"{seed}:ids")
        self._pins = random.Random(f"{seed}:pins")
        self._latency = random.Random(f"{seed}:latency")
        faults = {d: device.faults for d, device in self.devices.items()}
        self.events = EventLog(scenario.workspace_id, self.timeline, faults, seed)
        self.webhooks = WebhookRegistry(seed)

    # -- reading ---------------------------------------------------------------------------
    def now(self) -> float:
        return self.timeline.secs(self.clock.now())

    def device(self, device_id: str) -> Device:
        try:
            return self.devices[device_id]
        except KeyError:
            raise device_not_found(device_id) from None

    @property
    def codes(self) -> Mapping[str, AccessCode]:
        """Every code ever created (deleted and expired ones too), by id, in creation order."""
        return MappingProxyType(self._codes)

    def live_codes(self, device_id: str | None = None) -> list[AccessCode]:
        """Live codes in creation order: of one device (from the index), or of all devices."""
        now = self.now()
        if device_id is None:
            pool = self._codes.values()
        else:
            pool = self._codes_by_device.get(device_id, {}).values()
        return [c for c in pool if not c.gone(now, self.timeline)]

    def code(self, access_code_id: str) -> AccessCode:
        found = self._codes.get(access_code_id)
        if found is None or found.gone(self.now(), self.timeline):
            raise access_code_not_found(access_code_id)
        return found

    def code_by_pin(self, device_id: str, pin: str) -> AccessCode:
        self.device(device_id)
        for c in self.live_codes(device_id):
            if c.code == pin:
                return c
        raise access_code_not_found(f"{device_id}/{pin}")

    def render(self, code: AccessCode) -> dict[str, Any]:
        return code.render(self.now(), self.timeline, self.devices[code.device_id].faults)

    def render_device(self, device: Device) -> dict[str, Any]:
        now, spec = self.now(), device.spec
        offline = device.faults.offline(now)
        errors = [issue(f.code, self.timeline.iso(f.start)) for f in offline]
        name = spec.name or spec.id
        # Every field Seam's OpenAPI spec requires of a device; `device_type` must be one of
        # its enum, so the sandbox's locks pass as August locks (the fake's seed does too).
        return {
            "device_id": spec.id,
            "device_type": "august_lock",
            "display_name": name,
            "workspace_id": self.scenario.workspace_id,
            "connected_account_id": "sandbox_connected_account",
            "created_at": self.timeline.iso(0.0),
            "is_managed": True,
            "can_program_online_access_codes": True,
            "capabilities_supported": ["access_code", "lock"],
            "space_ids": [],
            "custom_metadata": {},
            "properties": {
                "name": name,
                "online": not offline,
                "manufacturer": "sandbox",
                "appearance": {"name": name},
                "model": {"display_name": "Sandbox lock", "manufacturer_display_name": "Sandbox"},
                "supported_code_lengths": [spec.code_length],
            },
            "errors": errors,
            "warnings": [],
        }

    def code_summary(self) -> dict[str, Any]:
        """Live codes per device, names holding several live codes on one device, totals."""
        per_device: dict[str, int] = {}
        duplicate_names: dict[str, list[str]] = {}
        for device_id in self.devices:
            live = self.live_codes(device_id)
            per_device[device_id] = len(live)
            names = [c.name for c in live if c.name is not None]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                duplicate_names[device_id] = repeated
        return {
            "codes_per_device": per_device,
            "duplicate_names": duplicate_names,
            "codes_created_total": self.created_total,
        }

    # -- writing ---------------------------------------------------------------------------
    def new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def generate_pin(self, device_id: str) -> str:
        length = self.device(device_id).spec.code_length
        taken = {c.code for c in self.live_codes(device_id)}
        for _ in range(10_000):
            candidate = "".join(self._pins.choice("0123456789") for _ in range(length))
            if candidate not in taken:
                return candidate
        raise SeamError(400, "invalid_input", f"No free {length}-digit code left on {device_id}")

    def create(self, req: CreateInput) -> AccessCode:
        device = self.device(req.device_id)
        now = self.now()
        if device.faults.forces_duplicate(now):
            raise duplicate(req.device_id)
        pin = req.code
        if pin is None:
            pin = self.generate_pin(req.device_id)
        elif any(c.code == pin for c in self.live_codes(req.device_id)):
            raise duplicate(req.device_id)
        lead = self.scenario.native_scheduling_lead_hours
        if not req.prefer_native_scheduling:
            lead = _JUST_IN_TIME_LEAD_HOURS
        program_from = now
        if req.starts_at is not None:
            program_from = max(now, self.timeline.secs(req.starts_at) - lead * 3600)
        latency = device.spec.latency.sample(self._latency)
        terminal = device.faults.terminal_error_for_new_code(now)
        code = AccessCode(
            access_code_id=self.new_id(),
            device_id=req.device_id,
            workspace_id=self.scenario.workspace_id,
            name=req.name,
            code=pin,
            starts_at=req.starts_at,
            ends_at=req.ends_at,
            created=now,
            program_from=program_from,
            latency=latency,
            scheduled_at=None if terminal else device.faults.finish(program_from, latency),
            terminal_error=terminal,
            common_code_key=req.common_code_key,
            is_one_time_use=req.is_one_time_use,
            is_external_modification_allowed=req.allow_external_modification,
        )
        self._store(code)
        self.created_total += 1
        self.events.record(now, "access_code.created", code)
        self.events.plan(code, now)
        return code

    def ordinal(self, code: AccessCode) -> int:
        """The code's place in creation order (0 = first ever): what a list cursor points at."""
        return self._ordinal[code.access_code_id]

    def _store(self, code: AccessCode) -> None:
        self._ordinal[code.access_code_id] = len(self._codes)
        self._codes[code.access_code_id] = code
        self._codes_by_device[code.device_id][code.access_code_id] = code

    def update(self, code: AccessCode, req: UpdateInput) -> None:
        now, before = self.now(), snapshot(code)
        self._apply_update(code, req, now)
        self.events.updated(code, before, now, outside=False)
        self.events.plan(code, now)

    def _apply_update(self, code: AccessCode, req: UpdateInput, now: float) -> None:
        if req.code is not None and req.code != code.code:
            if any(c.code == req.code for c in self.live_codes(code.device_id)):
                raise duplicate(code.device_id)
            pins: Change = {"code": code.code}, {"code": req.code}
            code.code = req.code
            self._mutate(code, "updating_code", now, pins)
        if req.name is not None and req.name != code.name:
            names: Change = {"name": code.name}, {"name": req.name}
            code.name = req.name
            self._mutate(code, "updating_name", now, names)
        if req.changes_time_frame:
            frame = {"starts_at": code.starts_at, "ends_at": code.ends_at}
            code.starts_at, code.ends_at = req.starts_at, req.ends_at
            frame_change = frame, {"starts_at": code.starts_at, "ends_at": code.ends_at}
            if now < code.program_from:  # still deferred: re-plan when programming starts
                self._replan(code, now)
            self._mutate(code, "updating_time_frame", now, _rendered(frame_change))

    def delete(self, code: AccessCode) -> None:
        if code.deleted_at is None:
            now = self.now()
            code.deleted_at = self._mutate(code, "deleting", now)
            self.events.plan(code, now)

    def _mutate(
        self, code: AccessCode, mutation_code: str, now: float, change: Change | None = None
    ) -> float:
        faults = self.devices[code.device_id].faults
        done = faults.finish(now, faults.spec.latency.sample(self._latency))
        code.mutations.append(Mutation(mutation_code, now, done, change))
        return done

    def _replan(self, code: AccessCode, now: float) -> None:
        lead = self.scenario.native_scheduling_lead_hours * 3600
        starts = self.timeline.secs(code.starts_at) if code.starts_at else now
        code.program_from = max(now, starts - lead)
        if code.terminal_error is None:
            faults = self.devices[code.device_id].faults
            code.scheduled_at = faults.finish(code.program_from, code.latency)


def _rendered(change: tuple[dict[str, datetime | None], dict[str, datetime | None]]) -> Change:
    """A time frame change as Seam shows it in `from` / `to`: ISO times or null."""
    before, after = ({k: iso(v) if v else None for k, v in side.items()} for side in change)
    return before, after
