"""What a job receives: every dependency, built once at worker start-up (worker.runtime)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from arq.connections import ArqRedis

from jobs.latency import LatencyBook
from jobs.state import StayStore
from worker.limiter import Limiter
from worker.seam import SeamClient
from worker.settings import Settings

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    settings: Settings
    redis: ArqRedis
    store: StayStore
    seam: SeamClient
    limiter: Limiter
    latency: LatencyBook
    clock: Clock = utcnow
