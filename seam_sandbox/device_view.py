"""A device as Seam's API renders it: every field its OpenAPI spec requires, and the lock's
code constraints and backup pool."""

from __future__ import annotations

from typing import Any

from seam_sandbox.faults import Timeline, issue
from seam_sandbox.pool import BackupPool
from seam_sandbox.scenario import DeviceSpec, Fault


def device_body(
    spec: DeviceSpec,
    offline: list[Fault],
    pool: BackupPool,
    workspace_id: str,
    tl: Timeline,
) -> dict[str, Any]:
    errors = [issue(f.code, tl.iso(f.start)) for f in offline] + pool.errors(tl)
    name = spec.name or spec.id
    # `device_type` must be one of the spec's enum, so the sandbox's locks pass as August
    # locks (the fake's seed does too).
    return {
        "device_id": spec.id,
        "device_type": "august_lock",
        "display_name": name,
        "workspace_id": workspace_id,
        "connected_account_id": "sandbox_connected_account",
        "created_at": tl.iso(0.0),
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
            "supported_code_lengths": spec.supported_code_lengths or [spec.code_length],
            "supports_backup_access_code_pool": spec.supports_backup_access_code_pool,
            "backup_access_code_pool_enabled": pool.active,
        },
        "errors": errors,
        "warnings": [],
    }
