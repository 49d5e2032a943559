"""Configuration, read from the environment once, at start-up.

Names follow Seam's SDK where one exists (`SEAM_API_KEY`, `SEAM_ENDPOINT`) and arq's convention
for Redis (`REDIS_URL`); everything of ours is prefixed `CODEPROV_`.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SEAM_PRODUCTION = "https://connect.getseam.com"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CODEPROV_", extra="ignore", frozen=True, populate_by_name=True,
        hide_input_in_errors=True,  # an invalid REDIS_URL holds a password: never echo it
    )

    redis_url: str = Field(DEFAULT_REDIS_URL, validation_alias="REDIS_URL")
    redis_tls_ca: FilePath | None = None  # a private CA's PEM bundle, for rediss://
    # A read Redis does not answer in this long fails (then redis-py retries): intake blocks 1 s.
    redis_timeout: float = Field(10.0, ge=2.0, le=300)
    seam_api_key: SecretStr = Field(SecretStr(""), validation_alias="SEAM_API_KEY")
    seam_endpoint: str = Field(SEAM_PRODUCTION, validation_alias="SEAM_ENDPOINT")
    # The `whsec_...` secret Seam shows when the webhook is created: `codeprov webhook` only.
    seam_webhook_secret: SecretStr = Field(SecretStr(""), validation_alias="SEAM_WEBHOOK_SECRET")

    key_prefix: str = Field("codeprov", min_length=1)
    queue_name: str = ""  # default `<key_prefix>:queue`: two deployments never share a queue
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
    # Backup codes (jobs/backup.py): time-bound codes ask for the lock's pool; a code that will
    # not set (or is at risk) hands the guest a backup PIN instead.
    backup_codes: bool = False

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
    # The events feed (worker/events_feed.py): one worker of the cluster polls /events/list.
    events_poll: float = Field(30.0, ge=0)  # seconds between polls; 0: no feed
    events_overlap: float = Field(900.0, ge=0, le=86400)  # re-read back: late events (~10 min)
    events_catch_up: float = Field(86400.0, gt=0)  # never read further back than this
    # Events "flow" while a verified webhook or a successful feed poll is this recent.
    events_alive: float = Field(3600.0, gt=0)
    events_webhook_poll: float = Field(900.0, gt=0)  # the feed's interval while webhooks arrive
    # While events flow, the longest a waiting code goes without a look (the safety net).
    safety_poll: float = Field(900.0, gt=0)
    # A scheduled code is guarded until ends_at: looks without events, and while they flow.
    guard_poll: float = Field(21600.0, gt=0)
    guard_safety_poll: float = Field(1_209_600.0, gt=0)
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
    def _redis_url_is_usable(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _queue_from_prefix(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("queue_name"):
            prefix = data.get("key_prefix") or "codeprov"
            data = {**data, "queue_name": f"{prefix}:queue"}
        return data

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> Settings:
        if self.redis_tls_ca is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError("CODEPROV_REDIS_TLS_CA is set, but REDIS_URL is not rediss:// (TLS)")
        return self


_DATABASE = re.compile(r"/?[0-9]*")
_PLAIN_USER = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]*")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a REDIS_URL, in words that never quote any part of it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        return "REDIS_URL must start with redis://, rediss:// or unix://"
    if scheme == "unix":
        return None
    # A `/`, `?` or `#` in the password ends the host part early: the rest of the password
    # would be read as the database or the query (and quoted in arq's errors).
    netloc_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[netloc_end:]:
        return "REDIS_URL: percent-encode reserved characters in the password (e.g. / as %2F)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "REDIS_URL is not a valid URL (an IPv6 host goes in brackets: [::1])"
    try:
        port = parts.port
    except ValueError:
        return "REDIS_URL: the port must be a number from 1 to 65535"
    if port == 0:
        return "REDIS_URL: the port must be a number from 1 to 65535"
    db = parse_qs(parts.query).get("db", ["0"])[0]
    if not (_DATABASE.fullmatch(parts.path) and _DATABASE.fullmatch(db)):
        return "REDIS_URL: the database must be a number, e.g. redis://host:6379/0"
    return None


def redis_credentials(url: str) -> tuple[str | None, str | None]:
    """REDIS_URL's user and password, percent-decoded (arq's from_dsn leaves `%2F` as is)."""
    parts = urlsplit(url)
    return unquote(parts.username or "") or None, unquote(parts.password or "") or None


def url_secrets(url: str) -> list[str]:
    """The password in a Redis URL, as written and percent-decoded: for the log redactor."""
    creds = url.partition("://")[2].rpartition("@")[0]
    raw = creds.partition(":")[2]
    return [s for s in dict.fromkeys((raw, unquote(raw))) if s]


def mask_url(url: str) -> str:
    """A Redis URL fit for logs and errors: its password, in any form, replaced by ***.

    Read as text, not parsed: a password with an unencoded `/` or `?` ends a parse's host part
    early, and a parse would show the rest. Everything between `://` and the last `@` is
    credentials; only a plain user name before a `:` is kept.
    """
    head, sep, rest = url.partition("://")
    creds, at, host = (rest if sep else url).rpartition("@")
    if not at:
        return url
    user, colon, _ = creds.partition(":")
    if not sep:  # not even a scheme we can tell from a user name: nothing before `@` shown
        return f"***@{host}"
    shown = f"{user}:***" if colon and _PLAIN_USER.fullmatch(user) else "***"
    return f"{head}://{shown}@{host}"
