"""The `codeprov` command. Names, flags and JSON shapes here are a contract: keep them."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from worker.commands import configure_logging, load_settings, with_redis


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """codeprov: provision Seam access codes for stays, from a Redis queue."""


# An example file's key copied as is (deploy/env.example, secret.env.example): every stay would
# fail `unauthorized`. Real keys, the sandbox's `seam_sandbox_key` and Seam's fake
# `seam_apikey1_token` match none of these.
PLACEHOLDER_KEY = re.compile(
    r"replace_?me|change_?me|placeholder|(?:^|[_\-\s])your|\.\.\.|[<>]|^seam_?$", re.IGNORECASE
)


@main.command()
@click.option(
    "--burst",
    is_flag=True,
    help="Take in the intake stream, then exit once the queue, deferred checks included, is empty.",
)
@click.option("--no-intake", is_flag=True, help="Do not consume the intake stream (jobs only).")
def worker(burst: bool, no_intake: bool) -> None:
    """Run a worker (configuration from the environment, see README)."""
    from worker.process import run_worker

    settings = load_settings()
    if not settings.seam_api_key.get_secret_value():
        raise click.UsageError("SEAM_API_KEY is not set: the worker needs a Seam API key")
    if placeholder := PLACEHOLDER_KEY.search(settings.seam_api_key.get_secret_value()):
        raise click.UsageError(
            f"SEAM_API_KEY is a placeholder (it contains {placeholder[0]!r}): set the real key"
        )
    if no_intake:
        settings = settings.model_copy(update={"intake": False})
    configure_logging(settings)
    run_worker(settings, burst=burst)


@main.command()
@click.option("--booking-id")
@click.option("--device-id", "device_ids", multiple=True,
              help="The lock; repeat it for a stay of several locks (one PIN on each).")
@click.option("--starts-at")
@click.option("--ends-at")
@click.option("--name")
@click.option("--action", type=click.Choice(["provision", "update", "cancel"]))
@click.option("--revision", help="The booking's revision: an integer or an ISO 8601 timestamp.")
@click.option("--file", "file", type=click.File("rb"), help="JSON Lines of stays ('-' = stdin).")
def enqueue(
    booking_id: str | None,
    device_ids: tuple[str, ...],
    starts_at: str | None,
    ends_at: str | None,
    name: str | None,
    action: str | None,
    revision: str | None,
    file: IO[bytes] | None,
) -> None:
    """Enqueue stays; prints one JSON result per stay; exit 1 if any was invalid."""
    from jobs.enqueue import EnqueueResult, enqueue_stays

    if file is not None and (booking_id or device_ids):
        raise click.UsageError("use either --file or --booking-id/--device-id, not both")
    if file is None and not (booking_id and (device_ids or action == "cancel")):
        raise click.UsageError("give --booking-id and --device-id, or --file")
    settings = load_settings()
    if file is not None:
        parsed = list(_read_lines(file))
    else:
        parsed = [_flags_stay(booking_id, device_ids, starts_at=starts_at, ends_at=ends_at,
                              name=name, action=action, revision=revision)]
    good = [p for p in parsed if not isinstance(p, EnqueueResult)]
    results = iter(
        with_redis(settings, lambda: enqueue_stays(good, settings=settings), hint=SAFE_AGAIN)
        if good
        else []
    )
    invalid = False
    for p in parsed:
        result = p if isinstance(p, EnqueueResult) else next(results)
        invalid |= result.result == "invalid"
        click.echo(json.dumps(result.as_dict()))
    sys.exit(1 if invalid else 0)


SAFE_AGAIN = " (re-running the same input is safe)"


def _flags_stay(booking_id: str | None, device_ids: tuple[str, ...], **fields: str | None
                ) -> dict[str, Any]:
    """The stay the flags give: one `--device-id` is `device_id`, several are `device_ids`."""
    stay: dict[str, Any] = {
        "booking_id": booking_id,
        "device_id": device_ids[0] if len(device_ids) == 1 else None,
        "device_ids": list(device_ids) if len(device_ids) > 1 else None,
        **fields,
    }
    return {k: v for k, v in stay.items() if v is not None}


def _read_lines(file: IO[bytes]) -> Iterator[Any]:
    """Each non-blank line: a dict to enqueue, or an `invalid` result saying what is wrong."""
    from jobs.enqueue import EnqueueResult

    for number, raw in enumerate(file, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield EnqueueResult(None, None, "invalid", f"line {number}: not UTF-8 text")
            continue
        except ValueError as exc:
            yield EnqueueResult(None, None, "invalid", f"line {number}: not JSON: {exc}")
            continue
        if not isinstance(data, dict):
            yield EnqueueResult(None, None, "invalid", f"line {number}: expected a JSON object")
            continue
        yield data


@main.command()
@click.argument("booking_id")
@click.option("--revision", help="The booking's revision: an integer or an ISO 8601 timestamp.")
def cancel(booking_id: str, revision: str | None) -> None:
    """Cancel a stay: its code is removed from the lock; prints the enqueue result."""
    from jobs.enqueue import enqueue_stays

    settings = load_settings()
    message = {"booking_id": booking_id, "action": "cancel", "revision": revision}
    [result] = with_redis(
        settings, lambda: enqueue_stays([message], settings=settings), hint=SAFE_AGAIN
    )
    click.echo(json.dumps(result.as_dict()))
    sys.exit(1 if result.result == "invalid" else 0)


@main.command()
@click.argument("booking_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the status contract).")
def status(booking_id: str, as_json: bool) -> None:
    """Show where one stay is: queued, provisioning, waiting_for_device, scheduled, failed."""
    from jobs.status import read_status

    settings = load_settings()
    found = with_redis(settings, lambda: read_status(settings, booking_id))
    if found is None:
        click.echo(
            f"codeprov: no stay with booking_id {booking_id!r} in this Redis "
            f"(check REDIS_URL and CODEPROV_KEY_PREFIX)",
            err=True,
        )
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found))
        return
    for key, value in found.items():
        shown = value if not isinstance(value, list | dict) else json.dumps(value)
        click.echo(f"{key:15} {shown}")


@main.command()
@click.option("--stays", default=36, show_default=True, help="How many stays to provision.")
@click.option("--workers", default=3, show_default=True, help="How many workers to run.")
def demo(stays: int, workers: int) -> None:
    """Run workers against the sandbox on a private Redis, and show the outcome."""
    from worker.demo import run_demo

    sys.exit(run_demo(stays=stays, workers=workers))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    help="A scenario file (YAML/JSON) or the name of a bundled one.",
)
@click.option("--seed", default=0, show_default=True, type=int)
def sandbox(host: str, port: int, scenario: str, seed: int) -> None:
    """Serve the Seam sandbox on HOST:PORT; prints its endpoint, API key and device ids."""
    from seam_sandbox.scenario import load_scenario
    from seam_sandbox.server import serve

    try:
        loaded = load_scenario(scenario)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    serve(host, port, loaded, seed)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the stats contract).")
def stats(as_json: bool) -> None:
    """Show jobs due now, deferred and in progress, stays per state, and live workers."""
    from worker.stats import read_stats, render_table

    settings = load_settings()
    found = with_redis(settings, lambda: read_stats(settings))
    click.echo(json.dumps(found.as_dict()) if as_json else render_table(found))


@main.command()
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Oldest acceptable heartbeat, in seconds [default: 3 x the beat interval].",
)
def health(max_age: float | None) -> None:
    """Exit 0 if this container's worker is alive (running, or waiting for Redis), else 1."""
    from worker.health import MISSED_BEATS, check, describe, heartbeat_file, heartbeat_interval

    try:
        limit = max_age if max_age is not None else MISSED_BEATS * heartbeat_interval()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    problem = check(heartbeat_file(), limit)
    if problem:
        click.echo(f"codeprov: unhealthy: {problem}", err=True)
        sys.exit(1)
    click.echo(describe(heartbeat_file()))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option(
    "--stays-every",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds between recounts of stays per state (a scan of every stay record).",
)
def metrics(host: str, port: int, stays_every: float) -> None:
    """Serve /metrics (Prometheus) and /due (JSON, for KEDA's metrics-api scaler)."""
    from worker.stats import serve_metrics

    settings = load_settings()
    configure_logging(settings)
    # A service: it waits out a Redis still starting (arq's retries), then says why it stops.
    with_redis(settings, lambda: serve_metrics(settings, host, port, stays_every), patient=True)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8788, show_default=True, type=int)
def webhook(host: str, port: int) -> None:
    """Serve POST /webhooks/seam (Seam's signed events wake their stays) and GET /healthz."""
    from worker.webhook import secret_problem, serve_webhooks

    settings = load_settings()
    problem = secret_problem(settings.seam_webhook_secret.get_secret_value())
    if problem:
        click.echo(f"codeprov: {problem}", err=True)
        sys.exit(2)
    configure_logging(settings)
    with_redis(settings, lambda: serve_webhooks(settings, host, port), patient=True)


if __name__ == "__main__":
    main()
