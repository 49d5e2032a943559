"""Logging: one JSON object per line, stdlib routed through structlog, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog

from worker.localredis import LocalRedis
from worker.logs import configure, get_logger, mask_pin
from worker.settings import mask_url

API_KEY = "seam_live_4f9a8b7c6d5e4f3a2b1c"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure(fmt="json", level="debug", secrets=[API_KEY], stream=out)
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_with_utc_timestamp_and_level(stream: io.StringIO) -> None:
    """An event is one JSON line with event, level and a UTC ISO timestamp."""
    get_logger(booking_id="B1").info("access_code.scheduled", access_code_id="ac1")
    [line] = lines(stream)
    assert line["event"] == "access_code.scheduled"
    assert line["level"] == "info"
    assert line["booking_id"] == "B1"
    assert str(line["timestamp"]).endswith("Z")


def test_stdlib_logs_go_through_the_same_pipeline(stream: io.StringIO) -> None:
    """arq's stdlib logging comes out as JSON named after its logger."""
    logging.getLogger("arq.worker").warning("job %s failed", "x")
    [line] = lines(stream)
    assert line["event"] == "arq.worker"
    assert line["message"] == "job x failed"
    assert line["level"] == "warning"


def test_api_key_never_logged(stream: io.StringIO) -> None:
    """The API key is replaced in messages, fields and exception text."""
    log = get_logger()
    log.warning("seam.request_failed", error=f"Bearer {API_KEY} refused")
    try:
        raise RuntimeError(f"header Authorization: Bearer {API_KEY}")
    except RuntimeError:
        log.error("job.crashed", exc_info=True)
    logging.getLogger("httpx").error("sent %s", API_KEY)
    text = stream.getvalue()
    assert API_KEY not in text
    assert text.count("[redacted]") == 3


def test_pins_masked_by_default(stream: io.StringIO) -> None:
    """A PIN in the `code` field shows only its last two digits."""
    get_logger().info("access_code.scheduled", code="482913")
    assert lines(stream)[0]["code"] == "****13"


def test_pins_shown_when_enabled() -> None:
    """CODEPROV_LOG_PINS=true shows PINs in full."""
    out = io.StringIO()
    configure(fmt="json", level="info", show_pins=True, stream=out)
    get_logger().info("access_code.scheduled", code="482913")
    assert json.loads(out.getvalue())["code"] == "482913"
    structlog.reset_defaults()


def test_redis_url_password_masked(stream: io.StringIO) -> None:
    """A Redis URL with a password is logged with *** in its place."""
    get_logger().info("worker.started", redis="redis://app:hunter2@redis:6379/0")
    assert lines(stream)[0]["redis"] == "redis://app:***@redis:6379/0"
    assert mask_url("rediss://u:p@h:6380/1") == "rediss://u:***@h:6380/1"


def test_level_filter(stream: io.StringIO) -> None:
    """Events below the configured level are dropped."""
    configure(fmt="json", level="warning", stream=stream)
    get_logger().info("access_code.checked")
    assert stream.getvalue() == ""


def test_mask_pin_short_values() -> None:
    """Masking keeps the last two digits and hides the rest."""
    assert mask_pin("1234") == "**34"
    assert mask_pin(None) is None


def test_a_failed_pipelines_record_never_reaches_a_log(
    stream: io.StringIO, tmp_path: Path
) -> None:
    """A full Redis refuses a stay record's SET: the logged error keeps Redis's words only."""
    server = LocalRedis(directory=str(tmp_path)).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what Redis already uses: full
        with pytest.raises(redis.RedisError) as refused, client.pipeline() as pipe:
            pipe.set("codeprov:stay:B1", json.dumps({"code": "918273", "seq": 3}))
            pipe.execute()
        client.close()
    finally:
        server.cleanup()
    assert "918273" in str(refused.value)  # what redis-py says, unscrubbed
    try:
        raise refused.value
    except redis.RedisError as exc:
        get_logger().error("intake.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
    [line] = lines(stream)
    assert "918273" not in json.dumps(line)
    assert "of pipeline caused error: command not allowed" in str(line["error"])
