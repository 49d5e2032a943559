"""Configuration, read from the environment once, at start-up.

Names follow Seam's SDK where one exists (`SEAM_API_KEY`, `SEAM_ENDPOINT`) and arq's convention
for Redis (`REDIS_URL`); everything of ours is prefixed `CODEPROV_`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SEAM_PRODUCTION = "https://connect.getseam.com"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CODEPROV_", extra="ignore", frozen=True, populate_by_name=True
    )

    redis_url: str = Field(DEFAULT_REDIS_URL, validation_alias="REDIS_URL")
    redis_tls_ca: FilePath | None = None  # a private CA's PEM bundle, for rediss://
    seam_api_key: SecretStr = Field(SecretStr(""), validation_alias="SEAM_API_KEY")
    seam_endpoint: str = Field(SEAM_PRODUCTION, validation_alias="SEAM_ENDPOINT")

    key_prefix: str = "codeprov"
    queue_name: str = "codeprov:queue"
    max_jobs: int = Field(10, ge=1, le=1000)
    # arq polls its queue this often: each step of a stay is a job, so a slow poll is idle
    # slots and late first requests (arq's default 0.5 s caps a worker at ~20 steps/s).
    queue_poll: float = Field(0.02, gt=0, le=5)
    job_timeout: float = Field(30.0, gt=0)
    shutdown_wait: int = Field(20, ge=0)
    http_timeout: float = Field(6.0, gt=0)  # 3 calls + 3 limiter waits fit in a step

    # Waiting for the lock: first check, growth, cap, jitter; deadline relative to starts_at.
    poll_initial: float = Field(5.0, gt=0)  # expected programming time until one is learned
    poll_factor: float = Field(1.1, ge=1.0)
    poll_max: float = Field(300.0, gt=0)
    poll_jitter: float = Field(0.02, ge=0, le=1)  # spreads looks; also adds to every lag
    schedule_deadline: float = Field(3600.0, ge=0)
    at_risk_margin: float = Field(3600.0, ge=0)
    transient_backoff_max: float = Field(300.0, gt=0)
    max_pin_attempts: int = Field(3, ge=1, le=20)

    # Seam budgets, shared by every worker through Redis.
    rate_per_second: float = Field(5.0, gt=0)
    rate_burst: int = Field(1, ge=1)
    device_creates_per_minute: float = Field(10.0, gt=0)
    device_updates_per_minute: float = Field(10.0, gt=0)
    device_deletes_per_minute: float = Field(20.0, gt=0)
    rate_max_sleep: float = Field(2.0, ge=0)
    create_turn_horizon: float = Field(60.0, ge=0)  # non-urgent stays reserve turns this far ahead

    results_maxlen: int = Field(100_000, ge=100)
    intake: bool = True  # consume the intake stream in this worker
    intake_claim_idle: float = Field(60.0, gt=0)
    intake_batch: int = Field(100, ge=1, le=10_000)
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_pins: bool = False

    @field_validator("seam_endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("SEAM_ENDPOINT must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> Settings:
        if self.redis_tls_ca is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError("CODEPROV_REDIS_TLS_CA is set, but REDIS_URL is not rediss:// (TLS)")
        return self


def mask_url(url: str) -> str:
    """A Redis URL fit for logs: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
