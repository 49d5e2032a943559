"""`codeprov webhook`: the HTTP receiver of Seam's webhooks (Svix-signed events).

`POST /webhooks/seam` verifies the signature with the `svix` library (never our own HMAC),
then hands the event to `jobs.events.Events.take`: recorded once in Redis, the stays it
concerns woken. It never calls Seam, so it answers in milliseconds, and it keeps no state of
its own: several receivers may run behind one load balancer.

What Svix sees: 401 for a missing or bad signature or a timestamp outside 5 minutes (nothing
recorded: Svix retries, and a forger learns nothing); 413 for a body over 1 MiB; 200 for any
verified body, an event or not (a body we cannot read would fail on every retry too); 503 when
Redis fails (Svix retries later). `GET /healthz` answers `ok`.
"""

from __future__ import annotations

import gc
import json

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from jobs.events import Events, parse_event
from worker.logs import get_logger
from worker.settings import Settings

__all__ = ["MAX_BODY", "secret_problem", "serve_webhooks", "webhook_app"]

MAX_BODY = 1024 * 1024  # Seam's events are a few KB
PATH = "/webhooks/seam"


def secret_problem(secret: str) -> str | None:
    """What is wrong with SEAM_WEBHOOK_SECRET, in words that never quote it."""
    if not secret:
        return (
            "SEAM_WEBHOOK_SECRET is not set: give the webhook's `whsec_...` secret "
            "(shown by Seam when the webhook is created)"
        )
    try:
        Webhook(secret)
    except Exception:  # binascii.Error, the library's EmptyWebhookSecretError, ...
        return "SEAM_WEBHOOK_SECRET is not a webhook secret: expected `whsec_` and base64"
    return None


def webhook_app(redis: Redis, settings: Settings) -> Starlette:
    """The receiver's routes, on one Redis pool (arq's queue is in the same database)."""
    verifier = Webhook(settings.seam_webhook_secret.get_secret_value())
    events = Events(redis, settings.key_prefix, settings.queue_name, settings.events_alive)
    log = get_logger()

    async def seam(request: Request) -> Response:
        body = await read_bounded(request, MAX_BODY)
        if body is None:
            log.warning("webhook.rejected", reason="too_large", limit_bytes=MAX_BODY)
            return PlainTextResponse("body too large\n", status_code=413)
        try:
            verifier.verify(body, dict(request.headers))
        except (json.JSONDecodeError, RecursionError):
            pass  # the library parses the body only once its signature matched: not an event
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: unreadable input
            log.warning("webhook.rejected", reason="bad_signature", detail=_detail(exc))
            return PlainTextResponse("invalid signature\n", status_code=401)
        try:
            return await _take(events, body)
        except RedisError as exc:
            log.error("webhook.failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return PlainTextResponse("try again later\n", status_code=503)

    async def _take(events: Events, body: bytes) -> Response:
        event = parse_event(body)
        if event is None:
            log.warning("webhook.rejected", reason="not_an_event", size_bytes=len(body))
            await events.count("received", "ignored_not_event")
            return JSONResponse({"outcome": "ignored_not_event"})
        outcome = await events.take(event)
        await events.note_alive(webhook=True)
        log.debug(
            "webhook.received",
            event_id=event.event_id,
            event_type=event.event_type,
            outcome=outcome.kind,
            woken=len(outcome.woken),
        )
        return JSONResponse({"outcome": outcome.kind})

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[Route(PATH, seam, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it passes `limit` bytes (read no further than that).

    Content-Length is only a shortcut for an honest client: a chunked body has none, and a
    declared length is checked against what arrives, chunk by chunk.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _detail(exc: Exception) -> str:
    """The library's reason (`Message timestamp too old`), never a header's value."""
    if isinstance(exc, WebhookVerificationError):
        return str(exc)[:100]
    return "malformed signature headers, or a body that is not UTF-8"


async def serve_webhooks(settings: Settings, host: str, port: int) -> None:
    """Serve the receiver until SIGINT/SIGTERM (uvicorn's handlers)."""
    import uvicorn as server

    from worker.queue import connect

    redis = await connect(settings)
    try:
        config = server.Config(
            webhook_app(redis, settings),
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )
        config.load()  # uvicorn's protocol modules imported now, so frozen with the rest below
        frozen = _freeze_heap()
        get_logger().info("webhook.started", host=host, port=port, path=PATH,
                          frozen_objects=frozen)
        await server.Server(config).serve()
    finally:
        await redis.aclose()


def _freeze_heap() -> int:
    """Take what start-up built (modules, the app, svix's API client) out of the collector.

    Those ~80,000 objects live as long as the process; left in, each full collection walks
    them all, a pause of 20-50 ms every few seconds under load that queues the requests behind
    it. Frozen, a full collection walks only what requests made. Returns how many were frozen.
    """
    gc.collect()  # garbage left by the imports is freed, not frozen for good
    gc.freeze()
    return gc.get_freeze_count()
