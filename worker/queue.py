"""Our thin seam over arq: connection, JSON wire format, deterministic job ids.

arq pickles jobs by default, which lets anyone who can write to Redis run code in the worker.
We serialize jobs as JSON, and our deserializer never raises: anything that is not one of our
jobs becomes a call to `reject_job`, which fails the stay with a reason instead of killing or
confusing the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.settings import Settings, redis_credentials

REJECT_FUNCTION = "reject_job"
STEP_FUNCTION = "advance_stay"
RECONCILE_FUNCTION = "reconcile_stays"
MAX_JOB_BYTES = 64 * 1024
JUMP_AHEAD = -3600.0  # seconds: an urgent job's score, before any backlog of the last hour


def job_id(booking_id: str, seq: int, *, prefix: str) -> str:
    """Deterministic per deployment, stay and step: enqueueing the same step twice is a no-op.

    arq's job keys (`arq:job:<id>`) are shared by every queue of a Redis database: the key
    prefix keeps two deployments' stays with the same booking id apart.
    """
    return f"{prefix}:{booking_id}:{seq}"


def reconcile_name(prefix: str) -> str:
    """The reconciler's cron name: arq makes its unique job id `<name>:<ms>`, so a name per
    deployment lets each deployment's reconciler run (one shared name runs only one of them)."""
    return f"{prefix}:{RECONCILE_FUNCTION}"


def _ours(function: object) -> bool:
    if function in (STEP_FUNCTION, REJECT_FUNCTION, RECONCILE_FUNCTION):
        return True
    return isinstance(function, str) and function.endswith(f":{RECONCILE_FUNCTION}")


def serialize(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_default).encode()


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def deserialize(raw: bytes) -> dict[str, Any]:
    """A job dict for arq; a `reject_job` call for anything that is not a job of ours."""
    if len(raw) > MAX_JOB_BYTES:
        return _reject(f"job payload is {len(raw)} bytes, over the {MAX_JOB_BYTES} limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _reject("job payload is not UTF-8 (a pickle or other binary data?)")
    except RecursionError:
        return _reject("job payload is nested too deeply")
    except json.JSONDecodeError as exc:
        return _reject(f"job payload is not JSON: {exc.msg} at position {exc.pos}")
    if not isinstance(data, dict) or not {"f", "a", "k", "t", "et"} <= data.keys():
        return _reject("job payload lacks arq's fields f, a, k, t, et")
    if isinstance(data.get("r"), dict) or "s" in data:
        return data  # a result record, read by arq's Job.result(): pass through
    if not _ours(data["f"]) or not isinstance(data["k"], dict):
        return _reject(f"unknown job function {str(data['f'])[:80]!r}")
    return data


def _reject(reason: str) -> dict[str, Any]:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    return {"t": 1, "f": REJECT_FUNCTION, "a": [], "k": {"reason": reason}, "et": now_ms}


def redis_settings(settings: Settings) -> RedisSettings:
    # redis-py retries and arq's own reconnect loop ride out a short Redis blip.
    rs = RedisSettings.from_dsn(settings.redis_url)  # Settings has validated it
    rs.username, rs.password = redis_credentials(settings.redis_url)  # from_dsn: not decoded
    rs.conn_timeout = 5
    rs.conn_retries = 10
    rs.conn_retry_delay = 1
    rs.retry_on_timeout = True
    rs.retry_on_error = [RedisConnectionError, RedisTimeoutError]
    rs.retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=5)
    rs.ssl_check_hostname = rs.ssl  # arq leaves it off: any trusted certificate would do
    if settings.redis_tls_ca is not None:
        rs.ssl_ca_certs = str(settings.redis_tls_ca)  # trusted besides the system's CAs
    return rs


async def connect(settings: Settings, *, retries: int | None = None) -> ArqRedis:
    """A pool on REDIS_URL: arq's retries (or `retries`) for a Redis not up yet, none for a
    refusal. `retries=0`: one attempt, for a command a person waits on."""
    from arq import create_pool

    rs = redis_settings(settings)
    retries = rs.conn_retries if retries is None else retries
    once = dataclasses.replace(rs, conn_retries=0)
    if retries == 0:  # and no redis-py retries of the first PING either
        once = dataclasses.replace(once, retry=None, retry_on_error=None, retry_on_timeout=False)
    for attempt in range(retries + 1):
        try:
            pool = await create_pool(
                once,
                job_serializer=serialize,
                job_deserializer=deserialize,
                default_queue_name=settings.queue_name,
            )
            return await _bound_reads(pool, settings.redis_timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            if attempt == retries or refusal(exc) is not None:
                raise
            await asyncio.sleep(rs.conn_retry_delay)
    raise AssertionError("unreachable")


async def _bound_reads(pool: ArqRedis, seconds: float) -> ArqRedis:
    """Every read on `pool` fails after `seconds` instead of waiting for ever.

    arq gives redis-py no socket_timeout, so a Redis that stops answering while our connections
    stay open (its host gone, a network partition: no FIN, no RST) hung every read for ever and
    the worker never noticed. The connection of arq's first PING was made before the bound:
    it is closed, and the pool makes bounded ones from here on.
    """
    pool.connection_pool.connection_kwargs["socket_timeout"] = seconds
    await pool.connection_pool.disconnect()
    pool.connection_pool.reset()  # type: ignore[no-untyped-call]
    return pool


REFUSED_CREDENTIALS = (
    "Redis refused the credentials in REDIS_URL: fix its user and password, or the ACL"
)
REFUSED_CERTIFICATE = (
    "Redis's TLS certificate was not accepted: check CODEPROV_REDIS_TLS_CA and REDIS_URL's host"
)


def refusal(exc: BaseException) -> str | None:
    """What to fix, when Redis (or its TLS) refused us: configuration, retrying will not help."""
    seen: BaseException | None = exc
    for _ in range(10):  # the error, and what it was raised from or during
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return REFUSED_CERTIFICATE
        if isinstance(seen, AuthenticationError | AuthorizationError
                      | AuthenticationWrongNumberOfArgsError | NoPermissionError):
            return REFUSED_CREDENTIALS
        if isinstance(seen, ResponseError) and str(seen).startswith(
            ("NOAUTH", "WRONGPASS", "NOPERM")
        ):
            return REFUSED_CREDENTIALS
        seen = seen.__cause__ or seen.__context__
    return None


async def enqueue_step(
    redis: ArqRedis, booking_id: str, seq: int, *, prefix: str, delay: float = 0.0
) -> bool:
    """Enqueue step `seq` of a stay, due in `delay` seconds; False if it already exists.

    `prefix` (CODEPROV_KEY_PREFIX) is required, never defaulted: a default would quietly put
    another deployment's stays under the same job ids again. The queue is the pool's.

    Relative, not absolute: arq scores jobs with the enqueuer's wall clock, and our own clock
    is injected (tests and the sandbox may run it ahead). A negative delay puts the job ahead
    of everything already due (arq takes due jobs in score order): urgent stays jump a backlog.
    """
    ahead = datetime.now(UTC) + timedelta(seconds=delay) if delay < 0 else None
    job = await redis.enqueue_job(
        STEP_FUNCTION,
        _job_id=job_id(booking_id, seq, prefix=prefix),
        _defer_by=delay if delay > 0 else None,
        _defer_until=ahead,
        booking_id=booking_id,
        seq=seq,
    )
    return job is not None
