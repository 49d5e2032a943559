"""A workspace-wide Seam outage (API key refused, endpoint redirecting): one log per outage.

Every stay meets the same error, so it is logged once for all workers: the worker whose
`SET {prefix}:seam:workspace_down ... GET` finds no key logs `seam.workspace_down`; the first
worker whose Seam calls succeed again deletes the key and logs `seam.workspace_recovered`. The
key holds the error's message (for `codeprov stats` and `/metrics`) and expires a while after
the last failure seen, so a workspace no stay uses any more is not reported down for ever.
"""

from __future__ import annotations

from redis.asyncio import Redis

from worker.deps import Deps
from worker.errors import SeamWorkspaceError
from worker.logs import get_logger

DOWN_TTL = 3600  # seconds after the last failure; longer than any backoff between two


def down_key(prefix: str) -> str:
    return f"{prefix}:seam:workspace_down"


async def report_down(deps: Deps, exc: SeamWorkspaceError) -> None:
    """Record the outage (refreshing its expiry); log it if no worker had yet."""
    ttl = int(max(DOWN_TTL, 4 * deps.settings.transient_backoff_max))
    # SET ... GET: atomic, refreshes the expiry, and says whether the key was already there.
    before = await deps.redis.set(
        down_key(deps.settings.key_prefix), exc.message, ex=ttl, get=True
    )
    if before is None:
        get_logger().error(
            "seam.workspace_down",
            route=exc.route,
            status=exc.status,
            seam_request_id=exc.request_id,
            message=exc.message,
        )


async def report_up(deps: Deps) -> None:
    """A Seam call succeeded: end the outage if one was recorded, and say so once."""
    if await deps.redis.delete(down_key(deps.settings.key_prefix)):
        get_logger().info("seam.workspace_recovered")


async def workspace_down(redis: Redis, prefix: str) -> str | None:
    """The recorded outage's message, or None when the workspace is not known to be down."""
    raw = await redis.get(down_key(prefix))
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
