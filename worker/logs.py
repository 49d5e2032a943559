"""Logging, configured in one place: structlog JSON lines on stdout (console on a TTY).

stdlib loggers (arq, httpx) go through the same processors, so every line is one JSON object.
Redaction runs last before rendering: the Seam API key is replaced wherever it appears, PINs
are masked (`****42`) unless CODEPROV_LOG_PINS=true, Redis URL passwords become ***, and the
commands redis-py quotes in a failed pipeline's error (stay records, PINs) are left out.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Up to the last `@` of the URL (a password may hold an unencoded `@`, `/` or `?`); a plain
# user name before a `:` stays, anything else before the `@` may be a password: all masked.
_URL_PASSWORD = re.compile(r"((?:rediss?|unix)://)(?:([A-Za-z0-9._~-]*):)?\S*@")


# redis-py quotes a failed pipeline command whole in its error ("Command # 1 (SET key {record})
# of pipeline caused error: OOM ..."): a stay record, with its PIN. Only Redis's words are kept.
_PIPELINE_COMMAND = re.compile(r"Command # (\d+) \(.*?\) of pipeline caused error", re.DOTALL)


def mask_pin(pin: str | None) -> str | None:
    if not pin:
        return pin
    return "*" * max(0, len(pin) - 2) + pin[-2:]


class Redactor:
    """Processor: no secret leaves the process in a log line."""

    def __init__(self, secrets: list[str], show_pins: bool = False) -> None:
        self._secrets = [s for s in secrets if s]
        self._show_pins = show_pins

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if not self._show_pins and "code" in event_dict:
            event_dict["code"] = mask_pin(str(event_dict["code"]))
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = self.scrub(value)
        return event_dict

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = _PIPELINE_COMMAND.sub(r"Command # \1 (…) of pipeline caused error", text)
        return _URL_PASSWORD.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    user = match[2]
    return f"{match[1]}{user}:***@" if user is not None else f"{match[1]}***@"


def configure(
    *,
    fmt: str = "auto",
    level: str = "info",
    secrets: list[str] | None = None,
    show_pins: bool = False,
    stream: Any = None,
) -> None:
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    redactor = Redactor(secrets or [], show_pins)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared[:-1], _stdlib_event, redactor],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request and arq every job start/end at INFO: two lines per poll of every
    # stay. Our own events say what changed; show theirs only when debugging.
    quiet = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("httpx", "httpcore", "arq.worker", "arq.jobs"):
        logging.getLogger(name).setLevel(quiet)


def _stdlib_event(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Name stdlib records by their logger (`arq.worker`) so every line has a dotted event."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
        event_dict["message"] = event_dict.pop("event", "")
        event_dict["event"] = record.name
    return event_dict


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    log: structlog.stdlib.BoundLogger = structlog.get_logger("codeprov").bind(**bound)
    return log


def flat(fields: MutableMapping[str, Any]) -> dict[str, Any]:
    """Drop None values: log lines carry only the fields that mean something."""
    return {k: v for k, v in fields.items() if v is not None}
