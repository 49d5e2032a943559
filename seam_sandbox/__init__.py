"""seam_sandbox: a fake Seam Connect API that changes over time, fails and rate-limits like Seam.

Seam's own fake never schedules a code and never answers 429; this one does, deterministically
for a given seed, on a clock that can run hours of a scenario in seconds.

    from seam_sandbox import Sandbox, Scenario, DeviceSpec, Fault, Latency, SandboxClock

    sb = Sandbox(
        Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(2.0),
                                     faults=[Fault(kind="device_offline", start=0, duration=30)])]),
        seed=0,
        clock=SandboxClock(speed=0),      # speed 0: time moves only with sb.clock.advance()
    )
    transport = httpx.ASGITransport(app=sb.app)   # or serve it: seam_sandbox.server.serve(...)

Models (all pydantic, in `seam_sandbox.scenario`; times in sandbox seconds from sandbox start):
- `Scenario(devices, device_count=3, device_defaults, api_key="seam_sandbox_key", workspace_id,
  speed=1.0, generate_code_shape="generated_code"|"access_code", native_scheduling_lead_hours=72,
  list_page_size=500, rate_limits, outages, slow, drops)`; `devices` empty → `device_count` devices
  `sandbox_device_1..N` built from `device_defaults`.
- `DeviceSpec(id, name, latency, faults, code_length=6, supported_code_lengths=None,
  taken_pins=[], supports_backup_access_code_pool=True, backup_pool_size=3)`: generated PINs
  have `code_length` digits (6 by default, so proposals rarely collide; they are unique among
  live codes anyway); the rest: README "Several locks, PIN constraints, backup codes".
- `Latency.fixed(s) | .uniform(low, high) | .lognormal(median, sigma)`: one draw per mutation.
- `Fault(kind, start=0, duration=None, error_code=None, count=None)`, kinds:
  `device_offline`, `delay_in_setting_on_device`, `failed_to_set_on_device` (transient: need a
  duration, pause programming and show on codes meanwhile); `no_space_for_access_code_on_device`,
  `duplicate_code_on_device`, `terminal_error` + `error_code` (never clear; codes created in the
  window, first `count` only if set); `duplicate_access_code` (409 on the first `count` creates).
- `RateLimits(per_device=True, create/update/delete_per_minute=10/10/20, per_key_rps=None,
  per_key_burst=10, retry_after=False, error_type="too_many_requests")`.
- `Outage(start, duration, routes, status=503, body="empty"|"seam")`,
  `Slow(seconds, routes, devices)` (real seconds), `Drop(probability, every_nth, routes,
  when="before"|"after")`.
- `WebhookFault(kind="dropped"|"duplicated"|"late"|"out_of_order"|"endpoint_down", start=0,
  duration=None, event_types=None, every_nth=None, delay=0, window=3, hold=60)` in
  `Scenario.webhook_faults` (README: Webhooks).

Scenario time (latencies, fault windows, the scheduling lead, starts_at/ends_at) runs on the
`SandboxClock`; rate limits and the peak-rate accounting run on real monotonic time.
"""

from seam_sandbox.clock import SandboxClock
from seam_sandbox.sandbox import Sandbox
from seam_sandbox.scenario import (
    DeviceDefaults,
    DeviceSpec,
    Drop,
    Fault,
    Latency,
    Outage,
    RateLimits,
    Scenario,
    ScenarioError,
    Slow,
    load_scenario,
)

__all__ = [
    "DeviceDefaults",
    "DeviceSpec",
    "Drop",
    "Fault",
    "Latency",
    "Outage",
    "RateLimits",
    "Sandbox",
    "SandboxClock",
    "Scenario",
    "ScenarioError",
    "Slow",
    "load_scenario",
]
