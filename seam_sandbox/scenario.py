"""Scenario models: which devices exist, how fast they program codes, and how Seam misbehaves.

Times in a scenario (`start`, `duration`, latencies) are sandbox seconds: `start` counts from
the moment the `Sandbox` is built, on its `SandboxClock`. Rate limits count real seconds.
"""

from __future__ import annotations

import json
import math
import random
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seam_sandbox.errors import RATE_LIMIT_ERROR_TYPE

# Fault kinds open over a window and clear by themselves; Seam keeps retrying meanwhile.
TRANSIENT_KINDS = ("device_offline", "delay_in_setting_on_device", "failed_to_set_on_device")
# Fault kinds whose error stays on the code forever: a person or a new PIN is needed.
TERMINAL_KINDS = (
    "no_space_for_access_code_on_device",
    "duplicate_code_on_device",
    "terminal_error",
)
FaultKind = Literal[
    "device_offline",
    "delay_in_setting_on_device",
    "failed_to_set_on_device",
    "no_space_for_access_code_on_device",
    "duplicate_code_on_device",
    "terminal_error",
    "duplicate_access_code",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Model):
    """How long a device takes to program one mutation; one draw per mutation."""

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    seconds: float = Field(default=5.0, ge=0)
    low: float = Field(default=0.0, ge=0)
    high: float = Field(default=0.0, ge=0)
    median: float = Field(default=5.0, gt=0)
    sigma: float = Field(default=0.5, ge=0)

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        return cls(kind="fixed", seconds=seconds)

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        return cls(kind="uniform", low=low, high=high)

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        return cls(kind="lognormal", median=median, sigma=sigma)

    @model_validator(mode="after")
    def _check_bounds(self) -> Latency:
        if self.kind == "uniform" and self.high < self.low:
            raise ValueError("uniform latency needs high >= low")
        return self

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.median), self.sigma)
        return self.seconds


class Fault(_Model):
    """One fault on a device.

    Transient kinds (`device_offline`, `delay_in_setting_on_device`, `failed_to_set_on_device`)
    hold up programming during [start, start + duration) and show their error/warning on the
    codes it holds up (`device_offline` on every code of the device); then programming resumes.
    Terminal kinds put their error on codes created in the window (the first `count` only, if
    set) once their latency has passed; those codes are never scheduled. `terminal_error` needs
    `error_code`. `duplicate_access_code` answers 409 to the first `count` creates in the window.
    `error_code` also renames the error of a transient kind (e.g. `hub_disconnected`).
    """

    kind: FaultKind
    start: float = Field(default=0.0, ge=0)
    duration: float | None = Field(default=None, gt=0)
    error_code: str | None = None
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_kind(self) -> Fault:
        if self.kind == "terminal_error" and not self.error_code:
            raise ValueError("a terminal_error fault needs error_code")
        if self.kind in TRANSIENT_KINDS and self.duration is None:
            raise ValueError(f"a {self.kind} fault needs a duration (it clears after it)")
        return self

    @property
    def code(self) -> str:
        return self.error_code or self.kind

    def active(self, t: float) -> bool:
        """Whether sandbox second `t` (since sandbox start) lies in this fault's window."""
        return self.start <= t and (self.duration is None or t < self.start + self.duration)


class DeviceDefaults(_Model):
    """Settings of the devices made from `device_count`.

    `supported_code_lengths`: the PIN lengths the lock takes (None: any of 4-12); `taken_pins`:
    PINs already on the lock outside Seam (a create or update to one answers 409). Backup pool
    (Seam: every access-code lock but Salto/Lockly has one): `backup_pool_size` backups can be
    pulled in all (the sandbox never refills the pool, so a test can empty it).
    """

    latency: Latency = Latency()
    faults: list[Fault] = []
    code_length: int = Field(default=6, ge=4, le=12)
    supported_code_lengths: list[Annotated[int, Field(ge=4, le=12)]] | None = None
    taken_pins: list[Annotated[str, Field(pattern=r"^\d{4,12}$")]] = []
    supports_backup_access_code_pool: bool = True
    backup_pool_size: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _length_supported(self) -> DeviceDefaults:
        lengths = self.supported_code_lengths
        if lengths is not None and self.code_length not in lengths:
            raise ValueError("code_length must be one of supported_code_lengths")
        return self


class DeviceSpec(DeviceDefaults):
    id: str = Field(min_length=1)
    name: str | None = None


class RateLimits(_Model):
    """Seam's per-device limits (on by default) and an optional per-API-key token bucket."""

    per_device: bool = True
    create_per_minute: int = Field(default=10, ge=1)
    update_per_minute: int = Field(default=10, ge=1)
    delete_per_minute: int = Field(default=20, ge=1)
    per_key_rps: float | None = Field(default=None, gt=0)
    per_key_burst: int = Field(default=10, ge=1)
    retry_after: bool = False
    error_type: str = RATE_LIMIT_ERROR_TYPE


class Outage(_Model):
    """A window of 5xx answers on every route (or only `routes`)."""

    start: float = Field(default=0.0, ge=0)
    duration: float | None = Field(default=None, gt=0)
    routes: list[str] | None = None
    status: int = Field(default=503, ge=500, le=599)
    body: Literal["empty", "seam"] = "empty"

    def active(self, t: float, route: str) -> bool:
        in_window = self.start <= t and (self.duration is None or t < self.start + self.duration)
        return in_window and (self.routes is None or route in self.routes)


class Slow(_Model):
    """Real seconds added to answers of `routes` / for `devices` (None = all)."""

    seconds: float = Field(gt=0)
    routes: list[str] | None = None
    devices: list[str] | None = None


class Drop(_Model):
    """Dropped connections: with `probability`, or on every `every_nth` request of `routes`.

    `when: after` handles the request first, so the client loses an answer that took effect.
    """

    probability: float = Field(default=0.0, ge=0, le=1)
    every_nth: int | None = Field(default=None, ge=1)
    routes: list[str] | None = None
    when: Literal["before", "after"] = "before"


WebhookFaultKind = Literal["dropped", "duplicated", "late", "out_of_order", "endpoint_down"]


class WebhookFault(_Model):
    """A webhook delivery fault on events occurring in [start, start + duration) (sandbox s).

    `dropped`: never delivered. `duplicated`: delivered twice with the same svix-id. `late`: the
    first attempt `delay` seconds after the event. `out_of_order`: runs of `window` events (or
    fewer, after `hold` s) are sent in a seeded shuffled order. `endpoint_down`: every attempt
    due in the window fails as a refused connection, so Svix's retry schedule runs. `dropped`,
    `duplicated`, `late` hit every `every_nth` matching event (default: every one).
    `event_types`: the types it applies to (default: all).
    """

    kind: WebhookFaultKind
    start: float = Field(default=0.0, ge=0)
    duration: float | None = Field(default=None, gt=0)
    event_types: list[str] | None = None
    every_nth: int | None = Field(default=None, ge=1)
    delay: float = Field(default=0.0, ge=0)
    window: int = Field(default=3, ge=2, le=1000)
    hold: float = Field(default=60.0, gt=0)

    def active(self, t: float, event_type: str) -> bool:
        in_window = self.start <= t and (self.duration is None or t < self.start + self.duration)
        return in_window and (self.event_types is None or event_type in self.event_types)


class Scenario(_Model):
    devices: list[DeviceSpec] = []
    device_count: int = Field(default=3, ge=0)
    device_defaults: DeviceDefaults = DeviceDefaults()
    api_key: str = Field(default="seam_sandbox_key", min_length=1)
    workspace_id: str = "sandbox_workspace"
    speed: float = Field(default=1.0, ge=0)
    generate_code_shape: Literal["generated_code", "access_code"] = "generated_code"
    # /access_codes/list's page size when the request sends no `limit` (Seam's spec documents
    # no default for that route; its other list routes default to 500).
    list_page_size: int = Field(default=500, ge=1)
    native_scheduling_lead_hours: float = Field(default=72.0, ge=0)
    rate_limits: RateLimits = RateLimits()
    outages: list[Outage] = []
    slow: list[Slow] = []
    drops: list[Drop] = []
    webhook_faults: list[WebhookFault] = []

    @model_validator(mode="after")
    def _unique_devices(self) -> Scenario:
        ids = [d.id for d in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("device ids must be unique")
        return self

    def device_specs(self) -> list[DeviceSpec]:
        """The explicit devices, or `device_count` generic ones named sandbox_device_N."""
        if self.devices:
            return list(self.devices)
        base = self.device_defaults.model_dump()
        return [
            DeviceSpec(id=f"sandbox_device_{n}", name=f"Sandbox lock {n}", **base)
            for n in range(1, self.device_count + 1)
        ]


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not fit the `Scenario` model."""


def builtin_scenarios() -> list[str]:
    folder = resources.files("seam_sandbox") / "scenarios"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a YAML or JSON file, or by name from `seam_sandbox/scenarios/`."""
    text, origin = _read(path)
    try:
        data: Any = json.loads(text) if origin.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{origin}: not valid YAML/JSON: {exc}") from exc
    try:
        return Scenario.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ScenarioError(f"{origin}: invalid scenario: {problems}") from exc


def _read(path: str | Path) -> tuple[str, str]:
    candidate = Path(path)
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8"), str(candidate)
    name = str(path)
    if name in builtin_scenarios():
        resource = resources.files("seam_sandbox") / "scenarios" / f"{name}.yaml"
        return resource.read_text(encoding="utf-8"), f"{name}.yaml"
    known = ", ".join(builtin_scenarios())
    raise ScenarioError(f"no scenario file {name!r} (built-in scenarios: {known})")
