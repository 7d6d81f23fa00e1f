"""TLS for the gateway's gRPC and HTTP servers (``GATEWAY_TLS_*``).

With a certificate and its key both servers serve TLS only (a plaintext
client is refused); with a client CA as well, both require a client
certificate signed by it (mTLS) and refuse the handshake without one. The
files are read at start-up; a certificate renewed on disk takes effect at the
next restart (cert-manager rotates well before expiry).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The servers' certificate chain and key, and the CA of client certificates (mTLS) if any."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ServerTls | None:
        """The TLS configuration, or ``None`` to serve plaintext."""
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``."""
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=self.client_ca_file.read_bytes() if self.client_ca_file else None,
            require_client_auth=self.mutual,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """``uvicorn.Config`` keyword arguments."""
        options: dict[str, Any] = {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
        if self.client_ca_file is not None:
            options |= {"ssl_ca_certs": str(self.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options
