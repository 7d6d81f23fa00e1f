"""TLS of a service's NATS connection, from its settings (``<PREFIX>_NATS_TLS_*``).

``nats_tls_options`` turns the settings into keyword arguments of ``nats.connect``
(``choreo.bus.connect`` adds them to its own). With none of the settings it returns
nothing and the connection is what the URL and the server make it. With any of them:

- the server's certificate is verified against ``NATS_TLS_CA_FILE`` (else the system's
  CAs), hostname included: each URL's host must be in the certificate;
- with ``NATS_TLS_CERT_FILE`` and ``NATS_TLS_KEY_FILE`` the service presents its own
  certificate (mutual TLS, for a server with ``verify: true``);
- the TLS handshake comes first, before the server's INFO (``tls_handshake_first``), so a
  server or a man in the middle that answers in plain text gets a TLS ClientHello and
  never the credentials: nats-py would otherwise follow the server's INFO and, when it
  does not ask for TLS, send CONNECT (user and password) in the clear. The NATS server
  must allow it: ``handshake_first`` in its ``tls`` block (nats-server 2.10.4 or later;
  a duration there also admits clients that read INFO first, such as the `nats` CLI).

The files are read when this is called (at each start-up); a rotated certificate takes
effect at the next restart.
"""

from __future__ import annotations

import ssl
from typing import Any

from choreo.settings import ServiceSettings


def nats_tls_context(settings: ServiceSettings) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, server certificate and hostname verified."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.nats_tls_cert_file and settings.nats_tls_key_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    return context


def nats_tls_options(settings: ServiceSettings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the settings' TLS; empty when TLS is not configured.

    Raises:
        ssl.SSLError: A file is not a PEM certificate or key, or the key does not match.
    """
    if not settings.nats_tls:
        return {}
    return {"tls": nats_tls_context(settings), "tls_handshake_first": True}
