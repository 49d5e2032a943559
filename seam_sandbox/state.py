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

from seam_sandbox import pins
from seam_sandbox.clock import SandboxClock
from seam_sandbox.codes import AccessCode, Change, Mutation
from seam_sandbox.device_view import device_body
from seam_sandbox.errors import SeamError, access_code_not_found, device_not_found, invalid_input
from seam_sandbox.errors import duplicate_access_code as duplicate
from seam_sandbox.events import EventLog, snapshot
from seam_sandbox.faults import DeviceFaults, Timeline, iso
from seam_sandbox.pool import BackupPool
from seam_sandbox.scenario import DeviceSpec, Scenario
from seam_sandbox.validation import CreateInput, UpdateInput
from seam_sandbox.webhooks import WebhookRegistry

_JUST_IN_TIME_LEAD_HOURS = 1.0  # prefer_native_scheduling=false: Seam loads ~60 min ahead


@dataclass
class Device:
    spec: DeviceSpec
    faults: DeviceFaults
    pool: BackupPool

    @classmethod
    def of(cls, spec: DeviceSpec) -> Device:
        pool = BackupPool(spec.supports_backup_access_code_pool, spec.backup_pool_size)
        return cls(spec, DeviceFaults(spec), pool)


class SandboxState:
    def __init__(self, scenario: Scenario, seed: int, clock: SandboxClock) -> None:
        self.scenario = scenario
        self.clock = clock
        self.timeline = Timeline(clock.now())
        self.devices = {s.id: Device.of(s) for s in scenario.device_specs()}
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
        device = self.devices[code.device_id]
        body = code.render(self.now(), self.timeline, device.faults)
        body["is_backup_access_code_available"] = device.pool.available_for(code)
        if not code.is_backup:  # the device's empty-pool error, copied onto its codes
            body["errors"].extend(device.pool.errors(self.timeline))
        return body

    def render_device(self, device: Device) -> dict[str, Any]:
        now = self.now()
        return device_body(
            device.spec, device.faults.offline(now), device.pool, self.scenario.workspace_id,
            self.timeline,
        )  # fmt: skip

    def common_pin(self, common_code_key: str) -> str | None:
        """The PIN the live codes of a `common_code_key` share (Seam guarantees one), if any."""
        for c in self.live_codes():
            if c.common_code_key == common_code_key:
                return c.code
        return None

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

    def generate_pin(
        self, device_id: str, length: int | None = None, avoid: frozenset[str] = frozenset()
    ) -> str:
        """A PIN the lock takes: `length` digits (default its `code_length`), free on it and not
        in `avoid` (a PIN shared across locks must be free on all of them)."""
        spec = self.device(device_id).spec
        length = length or spec.code_length
        taken = {c.code for c in self.live_codes(device_id)} | set(spec.taken_pins) | avoid
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
        pin = self._pin_for(req)
        if req.use_backup_access_code_pool:
            device.pool.activate(now)
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

    def _pin_for(self, req: CreateInput) -> str:
        """The new code's PIN: asked for, its `common_code_key` group's, or generated."""
        pin = req.code
        group = self.common_pin(req.common_code_key) if req.common_code_key else None
        if group is not None:
            if pin is not None and pin != group:
                raise invalid_input("code", "Codes of one common_code_key share one code")
            pin = group
        if pin is None:
            return self.generate_pin(req.device_id)
        self.check_pin(req.device_id, pin)
        return pin

    def check_pin(self, device_id: str, pin: str, exclude: AccessCode | None = None) -> None:
        """Raise the lock's refusal of `pin` (409 on it already, 400 against its constraints)."""
        live = (c.code for c in self.live_codes(device_id) if c is not exclude)
        refused = pins.refusal(self.device(device_id).spec, pin, live)
        if refused is not None:
            raise refused

    def keep(self, code: AccessCode) -> None:
        """Store a code Seam made by itself (a pulled backup), not counted as a create."""
        self._store(code)

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
        if req.use_backup_access_code_pool:
            self.devices[code.device_id].pool.activate(now)
        self.events.updated(code, before, now, outside=False)
        self.events.plan(code, now)

    def _apply_update(self, code: AccessCode, req: UpdateInput, now: float) -> None:
        if req.code is not None and req.code != code.code:
            self.check_pin(code.device_id, req.code, exclude=code)
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
