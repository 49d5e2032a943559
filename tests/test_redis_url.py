"""REDIS_URL passwords with reserved characters: percent-encoded they work, unencoded they are a
clear error, and no part of a password is ever printed.

A private redis-server of its own, with an ACL user whose password has `/`, `+` and `=` (as
Azure keys do), and one with `@`, `:`, `?`, `#` and `%` besides: the session's server is shared.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from pydantic import ValidationError
from redis import Redis

from bench.cluster import CODEPROV, ROOT
from worker.localredis import LocalRedis
from worker.logs import Redactor
from worker.queue import connect
from worker.settings import Settings, mask_url

AZURE = "Ab3d/Ef9+Gh=="
NASTY = "p@ss:w/rd?x#y%2Fz"
USERS = {"azure": AZURE, "nasty": NASTY}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalRedis]:
    local = LocalRedis().start()
    try:
        with Redis.from_url(local.url) as admin:
            for user, password in USERS.items():
                admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                      "+@all")
        yield local
    finally:
        local.cleanup()


def encoded(server: LocalRedis, user: str) -> str:
    return f"redis://{user}:{quote(USERS[user], safe='')}@127.0.0.1:{server.port}/0"


def fragments(password: str) -> list[str]:
    """Every 4-character piece of a password: none may be printed."""
    return [password[i : i + 4] for i in range(len(password) - 3)]


def codeprov(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    return subprocess.run([CODEPROV, *args], env=env | {"REDIS_URL": redis_url}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.anyio
@pytest.mark.parametrize("user", USERS)
async def test_percent_encoded_password_authenticates(server: LocalRedis, user: str) -> None:
    """A percent-encoded password is decoded before AUTH: the ACL user is who we are."""
    pool = await connect(Settings(redis_url=encoded(server, user)), retries=0)
    try:
        assert (await pool.acl_whoami()) == user
    finally:
        await pool.aclose()


def test_status_with_encoded_password_reaches_redis(server: LocalRedis) -> None:
    """`codeprov status` with an encoded Azure-style password answers "no stay" (exit 1)."""
    done = codeprov(encoded(server, "azure"), "status", "B1")
    assert done.returncode == 1, done.stderr
    assert "no stay with booking_id 'B1'" in done.stderr
    assert not [f for f in fragments(AZURE) if f in done.stdout + done.stderr]


@pytest.mark.parametrize("password", [AZURE, NASTY])
def test_unencoded_password_is_a_clear_error_without_it(
    server: LocalRedis, password: str
) -> None:
    """An unencoded reserved character: exit 2, one line saying to percent-encode, no fragment."""
    done = codeprov(f"redis://app:{password}@127.0.0.1:{server.port}/0", "status", "B1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "codeprov: invalid configuration: REDIS_URL: percent-encode reserved characters in "
        "the password (e.g. / as %2F)"
    ]
    assert not [f for f in fragments(password) if f in done.stdout + done.stderr]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"redis://:{AZURE}@127.0.0.1:6399/0", "percent-encode"),
        (f"redis://:{NASTY}@127.0.0.1:6399/0", "percent-encode"),
        ("redis://:Zq7xWv9k@127.0.0.1:99999/0", "port"),
        ("redis://:Zq7xWv9k@127.0.0.1:63a9/0", "port"),
        ("redis://:Zq7xWv9k@[::1/0", "not a valid URL"),
        ("redis://:Zq7xWv9k@127.0.0.1:6379/zero", "database"),
        ("http://:Zq7xWv9k@127.0.0.1:6379/0", "must start with"),
    ],
)
def test_invalid_redis_url_names_the_problem_not_the_password(url: str, problem: str) -> None:
    """Settings refuse an unusable REDIS_URL saying what is wrong; the error holds no secret."""
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=url)
    password = url.partition("//:")[2].rpartition("@")[0]
    assert problem in str(caught.value)
    assert not [f for f in fragments(password) if f in str(caught.value)]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
        (f"redis://:{AZURE}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://:{quote(AZURE, safe='')}@h/0", "redis://:***@h/0"),
        (f"redis://app:{NASTY}@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://onlyasecret@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://app:s3cret@[::1:6380/0", "rediss://app:***@[::1:6380/0"),
        ("redis:/app:s3cret@h/0", "***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_mask_url_masks_every_form(url: str, masked: str) -> None:
    """mask_url hides the password however the URL is written, parseable or not."""
    assert mask_url(url) == masked


@pytest.mark.parametrize("password", [AZURE, NASTY])
def test_log_redactor_masks_urls_with_reserved_characters(password: str) -> None:
    """A Redis URL in a log line loses its whole password, `@`, `/` and `?` in it or not."""
    line = Redactor([]).scrub(f"connecting to redis://app:{password}@127.0.0.1:6379/0 now")
    assert line == "connecting to redis://app:***@127.0.0.1:6379/0 now"
