"""Gateway TLS: TLS only with a certificate; client certificates required with a client CA (mTLS).

The CA, server and client certificates are made here, at test time, with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.build import GatewayService
from gateway.settings import GatewaySettings
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA the gateway does not trust
    other_client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, other_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _issue("choreo test CA", ca_key, None, ca=True)
    other_ca = _issue("someone else's CA", other_ca_key, None, ca=True)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    server_key, client_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server = _issue("localhost", server_key, (ca.subject, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("client", client_key, (ca.subject, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other = _issue(
        "intruder", other_key, (other_ca.subject, other_ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Pki(
        ca_path,
        *_write(directory, "server", server, server_key),
        *_write(directory, "client", client, client_key),
        *_write(directory, "other", other, other_key),
    )


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def grpc_credentials(pki: Pki, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def grpc_health(gateway: GatewayService, credentials: grpc.ChannelCredentials | None) -> None:
    target = f"localhost:{gateway.grpc_port}"
    channel = (
        grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    )
    async with channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_tls_serves_both_apis_and_refuses_plaintext(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService, pki: Pki
) -> None:
    gateway = await start_gateway(sqlite_url, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    async with httpx.AsyncClient(verify=client_context(pki)) as https:
        response = await https.get(f"https://localhost:{gateway.http_port}/healthz")
        assert response.status_code == 200
    await grpc_health(gateway, grpc_credentials(pki))

    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://localhost:{gateway.http_port}/healthz")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_health(gateway, None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate_from_the_client_ca(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService, pki: Pki
) -> None:
    gateway = await start_gateway(
        sqlite_url, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )
    url = f"https://localhost:{gateway.http_port}/healthz"
    async with httpx.AsyncClient(verify=client_context(pki, pki.client_cert, pki.client_key)) as https:
        assert (await https.get(url)).status_code == 200
    await grpc_health(gateway, grpc_credentials(pki, pki.client_cert, pki.client_key))

    for cert, key in ((None, None), (pki.other_client_cert, pki.other_client_key)):
        async with httpx.AsyncClient(verify=client_context(pki, cert, key)) as https:
            with pytest.raises(httpx.TransportError):
                await https.get(url)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_health(gateway, grpc_credentials(pki, cert, key))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cert_and_key_go_together(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both or neither"):
        GatewaySettings(tls_cert_file=pki.server_cert)
    with pytest.raises(ValueError, match="mTLS"):
        GatewaySettings(tls_client_ca_file=pki.ca)
    with pytest.raises(ValueError, match="not a readable file"):
        GatewaySettings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key.with_name("missing.key"))
