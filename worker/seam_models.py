"""The Seam objects we read, typed and tolerant.

Unknown fields are kept, unknown error/warning/mutation codes are plain strings: Seam adds codes.
Missing optional fields get the meaning ../shared/SEAM-API.md gives them (a missing
`pending_mutations` is `[]`; a missing `is_scheduled_on_device` is unknown, i.e. None).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class CodeError(_Tolerant):
    error_code: str
    message: str = ""
    created_at: datetime | None = None
    is_access_code_error: bool | None = None
    is_device_error: bool | None = None
    is_connected_account_error: bool | None = None


class CodeWarning(_Tolerant):
    warning_code: str
    message: str = ""
    created_at: datetime | None = None


class Mutation(_Tolerant):
    mutation_code: str
    message: str = ""
    created_at: datetime | None = None
    scheduled_at: datetime | None = None


class AccessCode(_Tolerant):
    access_code_id: str = Field(min_length=1)
    device_id: str = Field(min_length=1)
    code: str | None = None
    name: str | None = None
    type: str | None = None
    status: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    errors: list[CodeError] = Field(default_factory=list)
    warnings: list[CodeWarning] = Field(default_factory=list)
    pending_mutations: list[Mutation] = Field(default_factory=list)
    is_scheduled_on_device: bool | None = None
    # Backup codes (jobs/backup.py); absent on servers without a backup pool: None.
    is_backup_access_code_available: bool | None = None
    is_backup: bool | None = None
    pulled_backup_access_code_id: str | None = None

    @field_validator("errors", "warnings", "pending_mutations", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def reports_scheduling(self) -> bool:
        """Whether this server tells scheduling at all (Seam's fake and older APIs do not)."""
        return bool({"pending_mutations", "is_scheduled_on_device"} & self.model_fields_set)

    @property
    def is_scheduled(self) -> bool:
        """On the lock's schedule: the flag (or status `set`), and nothing pending.

        A server that reports neither field gets the older status semantics: `set`, or `unset`
        for a time-bound code (loaded and waiting for its window).
        """
        if self.pending_mutations:
            return False
        if self.is_scheduled_on_device is not None:
            return self.is_scheduled_on_device or self.status == "set"
        if not self.reports_scheduling:
            return self.status == "set" or (self.status == "unset" and self.type == "time_bound")
        return self.status == "set"

    @property
    def deferred_until(self) -> datetime | None:
        """When Seam will start loading the code, if it said so (`deferring_creation`)."""
        times = [
            m.scheduled_at
            for m in self.pending_mutations
            if m.mutation_code == "deferring_creation" and m.scheduled_at is not None
        ]
        return min(times) if times else None


class DeviceProperties(_Tolerant):
    supports_backup_access_code_pool: bool | None = None  # None: not said, i.e. no pool


class Device(_Tolerant):
    device_id: str = Field(min_length=1)
    properties: DeviceProperties = Field(default_factory=DeviceProperties)

    @field_validator("properties", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class GeneratedCode(_Tolerant):
    """generate_code's answer: real Seam sends {device_id, code}; the OpenAPI spec a full code."""

    device_id: str | None = None
    code: str = Field(pattern=r"^\d{4,12}$")
    access_code_id: str | None = None

    def as_access_code(self) -> AccessCode | None:
        if not self.access_code_id:
            return None
        return AccessCode.model_validate(self.model_dump())
