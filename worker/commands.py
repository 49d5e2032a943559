"""What every `codeprov` command needs: settings, logging, and a Redis that answers or a clear
exit (status 2: configuration or Redis; 1 keeps its meaning, an answer such as "unknown")."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import IO, NoReturn, TypeVar

import click
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.settings import Settings, mask_url, url_secrets

T = TypeVar("T")
PROMPT = 3.0  # seconds: how long a one-shot command tries Redis before saying it is down


def load_settings() -> Settings:
    """Settings from the environment, or a clear message and exit status 2."""
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            message = err["msg"].removeprefix("Value error, ").removeprefix(f"{field}: ")
            click.echo(f"codeprov: invalid configuration: {field}: {message}", err=True)
        sys.exit(2)
    # stdout carries the commands' JSON answers: their logs go to stderr.
    configure_logging(settings, stream=sys.stderr)
    return settings


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """Services (worker, metrics) log to stdout; one-shot commands to stderr."""
    from worker.logs import configure

    configure(
        fmt=settings.log_format,
        level=settings.log_level,
        secrets=[settings.seam_api_key.get_secret_value(), *url_secrets(settings.redis_url),
                 settings.seam_webhook_secret.get_secret_value()],
        show_pins=settings.log_pins,
        stream=stream or sys.stdout,
    )


def with_redis(
    settings: Settings, work: Callable[[], Awaitable[T]], *, patient: bool = False, hint: str = ""
) -> T:
    """Run `work`; Redis down or refusing us: one `codeprov:` line and exit status 2.

    One connection attempt first, bounded by PROMPT, so a person is not kept waiting through
    arq's ten retries; `patient` (a service starting) keeps them. Status 1 means an answer
    (an unknown booking, an invalid stay), never "Redis is down".
    """

    async def probed() -> T:
        if not patient:
            from worker.queue import connect

            async with asyncio.timeout(PROMPT):
                probe = await connect(settings, retries=0)
            await probe.aclose()
        return await work()

    try:
        return asyncio.run(probed())
    except (TimeoutError, RedisError, OSError) as exc:
        redis_down(settings, exc, hint)


def redis_down(settings: Settings, exc: BaseException, hint: str = "") -> NoReturn:
    from worker.logs import Redactor
    from worker.queue import refusal

    where = f"Redis at {mask_url(settings.redis_url)}"
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer in {PROMPT:g} s"
    refused = refusal(exc)
    if refused:
        line = f"{where} refused us: {refused} ({reason})"
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError):
        line = f"{where} is unreachable: {reason}"
    else:  # it answered, with an error: out of memory, read-only replica, ...
        line = f"{where} answered {reason}"
    line = Redactor(url_secrets(settings.redis_url)).scrub(line)
    click.echo(f"codeprov: {line}{hint}", err=True)
    sys.exit(2)
