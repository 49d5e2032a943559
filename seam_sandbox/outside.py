"""Changes made outside codeprov (at the lock, by the lock's app, by the network), for tests.

Each changes the sandbox's state as Seam would then see it and emits Seam's event for it.
"""

from __future__ import annotations

from seam_sandbox.errors import SeamError
from seam_sandbox.events import disconnect_fields, snapshot
from seam_sandbox.scenario import Fault
from seam_sandbox.state import SandboxState


def delete_code(state: SandboxState, access_code_id: str) -> None:
    """The code is deleted at the lock: `access_code.deleted_external_to_seam`, then 404."""
    code = state.code(access_code_id)
    now = state.now()
    code.deleted_at = now
    state.events.retire(code, now)
    state.events.record(now, "access_code.deleted_external_to_seam", code)


def change_pin(state: SandboxState, access_code_id: str, pin: str) -> None:
    """The PIN is changed at the keypad: `modified_external_to_seam`, `changed`, `code_changed`."""
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise ValueError("a PIN is 4 to 12 digits")
    code = state.code(access_code_id)
    now, before = state.now(), snapshot(code)
    code.code = pin
    state.events.record(now, "access_code.modified_external_to_seam", code)
    state.events.updated(code, before, now, outside=True)


def take_offline(state: SandboxState, device_id: str, error_code: str) -> None:
    """The lock drops offline until `bring_online`: `device.disconnected` (`error_code`)."""
    faults = state.device(device_id).faults
    now = state.now()
    if faults.offline(now):
        raise SeamError(400, "invalid_input", f"{device_id} is already offline")
    # model_construct: an open window (no duration), which scenario faults may not have.
    faults.outside.append(Fault.model_construct(kind="device_offline", start=now, duration=None))
    fields = disconnect_fields(error_code, state.timeline.iso(now))
    state.events.record_device(now, "device.disconnected", device_id, **fields)


def bring_online(state: SandboxState, device_id: str) -> None:
    """The lock taken offline by `take_offline` is back: `device.connected`."""
    faults = state.device(device_id).faults
    now = state.now()
    open_windows = [f for f in faults.outside if f.duration is None]
    if not open_windows:
        raise SeamError(400, "invalid_input", f"{device_id} was not taken offline")
    for window in open_windows:
        faults.outside.remove(window)
        if now > window.start:
            closed = Fault.model_construct(
                kind="device_offline", start=window.start, duration=now - window.start
            )
            faults.outside.append(closed)
    state.events.record_device(now, "device.connected", device_id)
