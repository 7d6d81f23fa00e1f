"""NATS client TLS (<PREFIX>_NATS_TLS_*): a real nats-server with TLS, certificates made here.

The service connects through ``choreo.bus.connect`` with its settings, as at start-up.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from booking.settings import BookingSettings
from choreo.bus import connect
from choreo.service import load_settings
from choreo.tlsconfig import nats_tls_options
from choreoctl.stack.natsserver import find_binary
from choreoctl.stack.ports import free_port
from tests.tlscerts import CertificateAuthority, Leaf

PASSWORD = "booking-secret-password"


class TlsNats:
    def __init__(self, port: int, monitor_port: int) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        self.monitor_port = monitor_port

    def connz(self) -> list[dict[str, object]]:
        response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/connz?auth=true", timeout=5)
        connections: list[dict[str, object]] = response.json()["connections"] or []
        return connections


@contextmanager
def tls_nats(directory: Path, ca: CertificateAuthority, server: Leaf, *, verify: bool) -> Iterator[TlsNats]:
    """nats-server requiring TLS (handshake first) from every client; with ``verify``, client certs too."""
    port, monitor = free_port(), free_port()
    conf = directory / "nats.conf"
    conf.write_text(
        f"""
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor}
authorization {{ users: [ {{ user: booking, password: "{PASSWORD}" }} ] }}
tls {{
  cert_file: "{server.cert}"
  key_file: "{server.key}"
  ca_file: "{ca.cert_file}"
  verify: {"true" if verify else "false"}
  handshake_first: true
  timeout: 2
}}
"""
    )
    process = subprocess.Popen(
        [find_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{monitor}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise AssertionError(f"nats-server exited {process.returncode}")
            time.sleep(0.05)
        yield TlsNats(port, monitor)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki", "choreo")


@pytest.fixture
def server_cert(ca: CertificateAuthority) -> Leaf:
    return ca.issue("nats", client=False)


def settings(url: str, **tls: str | None) -> BookingSettings:
    return BookingSettings(nats_url=url, nats_user="booking", nats_password=PASSWORD, **tls)  # type: ignore[arg-type]


async def roundtrip(s: BookingSettings) -> None:
    nc = await connect(s, allow_reconnect=False, connect_timeout=2)
    try:
        sub = await nc.subscribe("tls.check")
        await nc.publish("tls.check", b"over tls")
        assert (await sub.next_msg(timeout=2)).data == b"over tls"
    finally:
        await nc.close()


async def test_server_verified_against_the_ca(
    tmp_path: Path, ca: CertificateAuthority, server_cert: Leaf
) -> None:
    with tls_nats(tmp_path, ca, server_cert, verify=False) as nats:
        s = settings(nats.url, nats_tls_ca_file=str(ca.cert_file))
        nc = await connect(s, allow_reconnect=False, connect_timeout=2)
        try:
            [conn] = nats.connz()
            assert conn["authorized_user"] == "booking"
            assert str(conn["tls_version"]).startswith("1.3"), conn
        finally:
            await nc.close()
        await roundtrip(s)


async def test_a_server_signed_by_another_ca_is_refused(
    tmp_path: Path, ca: CertificateAuthority, server_cert: Leaf
) -> None:
    other = CertificateAuthority(tmp_path / "other", "other")
    with tls_nats(tmp_path, ca, server_cert, verify=False) as nats:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await roundtrip(settings(nats.url, nats_tls_ca_file=str(other.cert_file)))
        assert nats.connz() == []


async def test_the_hostname_is_checked(tmp_path: Path, ca: CertificateAuthority) -> None:
    # A certificate of the right CA, for another host: refused like a stranger's.
    elsewhere = ca.issue("nats-elsewhere", dns=("nats.example.internal",), ips=(), client=False)
    with (
        tls_nats(tmp_path, ca, elsewhere, verify=False) as nats,
        pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        await roundtrip(settings(nats.url, nats_tls_ca_file=str(ca.cert_file)))


async def test_without_tls_settings_the_tls_server_is_unreachable(
    tmp_path: Path, ca: CertificateAuthority, server_cert: Leaf
) -> None:
    with tls_nats(tmp_path, ca, server_cert, verify=False) as nats:
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises its own or the ssl error
            await roundtrip(settings(nats.url))
        assert nats.connz() == []


async def test_mutual_tls(tmp_path: Path, ca: CertificateAuthority, server_cert: Leaf) -> None:
    client = ca.issue("booking", dns=(), ips=(), server=False)
    with tls_nats(tmp_path, ca, server_cert, verify=True) as nats:
        # Server verified, but no certificate of our own: the server hangs up.
        with pytest.raises(Exception):  # noqa: B017
            await roundtrip(settings(nats.url, nats_tls_ca_file=str(ca.cert_file)))
        # A certificate from a CA the server does not trust: refused too.
        stranger = CertificateAuthority(tmp_path / "stranger", "stranger").issue("booking", server=False)
        with pytest.raises(Exception):  # noqa: B017
            await roundtrip(
                settings(
                    nats.url,
                    nats_tls_ca_file=str(ca.cert_file),
                    nats_tls_cert_file=str(stranger.cert),
                    nats_tls_key_file=str(stranger.key),
                )
            )
        await roundtrip(
            settings(
                nats.url,
                nats_tls_ca_file=str(ca.cert_file),
                nats_tls_cert_file=str(client.cert),
                nats_tls_key_file=str(client.key),
            )
        )


class PlainServer:
    """A plaintext 'NATS server' (or a man in the middle): sends INFO without TLS, records what comes."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = b'INFO {"server_id":"x","version":"2.15.1","proto":1,"auth_required":true}\r\n'
        writer.write(info)
        await writer.drain()
        try:
            while chunk := await asyncio.wait_for(reader.read(4096), 3):
                self.received += chunk
                if b"PING" in self.received:
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def plain_server() -> AsyncIterator[PlainServer]:
    fake = PlainServer()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = fake.server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        fake.server.close()


async def test_a_plaintext_server_never_gets_the_password(
    plain_server: PlainServer, ca: CertificateAuthority
) -> None:
    # nats-py follows the server's INFO: one that does not ask for TLS would get CONNECT with
    # the password in the clear. With TLS configured the client speaks TLS first instead.
    s = settings(f"nats://127.0.0.1:{plain_server.port}", nats_tls_ca_file=str(ca.cert_file))
    with pytest.raises(Exception):  # noqa: B017
        await roundtrip(s)
    await asyncio.sleep(0.1)
    assert plain_server.received, "the client said something"
    assert PASSWORD.encode() not in plain_server.received
    assert b"CONNECT" not in plain_server.received


def test_no_tls_settings_no_options() -> None:
    assert nats_tls_options(BookingSettings()) == {}


def test_options_hold_a_verifying_context(ca: CertificateAuthority) -> None:
    options = nats_tls_options(BookingSettings(nats_tls_ca_file=str(ca.cert_file)))
    assert options["tls_handshake_first"] is True
    context = options["tls"]
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("BOOKING_", "CHOREO_"))]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_a_missing_file_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOOKING_NATS_TLS_CA_FILE", str(tmp_path / "absent.crt"))
    with pytest.raises(SystemExit, match=r"BOOKING_NATS_TLS_CA_FILE: Value error, cannot read .*absent\.crt"):
        load_settings(BookingSettings)


@pytest.mark.usefixtures("clean_env")
def test_cert_and_key_go_together(monkeypatch: pytest.MonkeyPatch, ca: CertificateAuthority) -> None:
    leaf = ca.issue("booking", server=False)
    monkeypatch.setenv("BOOKING_NATS_TLS_CERT_FILE", str(leaf.cert))
    with pytest.raises(SystemExit, match=r"BOOKING_NATS_TLS_KEY_FILE: .*set both BOOKING_NATS_TLS_CERT_FILE"):
        load_settings(BookingSettings)
    monkeypatch.delenv("BOOKING_NATS_TLS_CERT_FILE")
    monkeypatch.setenv("BOOKING_NATS_TLS_KEY_FILE", str(leaf.key))
    with pytest.raises(ValidationError, match="set both"):
        BookingSettings()
    monkeypatch.setenv("BOOKING_NATS_TLS_CERT_FILE", str(leaf.cert))
    assert BookingSettings().nats_tls


@pytest.mark.usefixtures("clean_env")
def test_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_NATS_TLS_CA_FILE", "")
    assert not BookingSettings().nats_tls
