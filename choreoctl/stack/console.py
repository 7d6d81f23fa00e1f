"""The short human-readable account ``choreo up`` writes to the terminal.

The full story is in each service's JSON-lines log file; the console gets one
line per lifecycle event (started, ready, crashed, restarting, stopped) and per
warning or error a service logs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from choreo.natsidentity import OPERATOR
from choreoctl.stack.devsecrets import SECRETS_DIR
from choreoctl.stack.natsusers import SERVICE_USERS

if TYPE_CHECKING:
    from choreoctl.stack.services import Endpoints


#: Width of the source column: the longest service name (``notification``).
SOURCE_WIDTH = 12


class Console:
    """Writes ``HH:MM:SS source  message`` lines, flushed at once.

    Args:
        stream: Where to write (default: standard output).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def event(self, source: str, message: str) -> None:
        """One timestamped line about ``source`` (a service, ``nats``, ``choreo``)."""
        self.stream.write(f"{time.strftime('%H:%M:%S')} {source:<{SOURCE_WIDTH}} {message}\n")
        self.stream.flush()

    def text(self, text: str = "") -> None:
        """Plain text (endpoint listings, tables)."""
        self.stream.write(text + "\n")
        self.stream.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def print_endpoints(console: Console, ep: Endpoints) -> None:
    host, port = ep.grpc_target.rsplit(":", 1)
    lines = [
        "",
        "choreo is up:",
        f"  NATS        {ep.nats_url}",
        *_access_lines(ep),
        f"  gRPC        {ep.grpc_target}   (grpcurl -plaintext {ep.grpc_target} list)",
        f"  HTTP        {ep.http_base}   (POST/GET {ep.http_base}/v1/bookings)",
        f"  stats       {ep.http_base}/v1/stats   (GET; analytics, over NATS)",
        f"  OpenAPI     {ep.http_base}/openapi.json   (docs: {ep.http_base}/docs)",
        *(f"  health      {name:<{SOURCE_WIDTH}} {url}" for name, url in ep.health.items()),
        f"  gRPC health grpcurl -plaintext {host}:{port} grpc.health.v1.Health/Check",
        *_mail_lines(ep),
        f"  data        {ep.data_dir}",
        *(f"  log         {name:<{SOURCE_WIDTH}} {path}" for name, path in ep.logs.items()),
        "",
    ]
    console.text("\n".join(lines))


def _access_lines(ep: Endpoints) -> list[str]:
    lines = []
    if ep.operator_url is not None:
        secrets = ep.data_dir / SECRETS_DIR
        lines += [
            f"  NATS users  {', '.join(SERVICE_USERS)} (their k8s permissions), {OPERATOR}",
            f"              (passwords in {secrets})",
            f"  operator    {ep.operator_url}",
            "              (reads every stream, manages the DLQ, may publish facts: for",
            "               choreo dlq --nats-url, BOOKING_NATS_URL=... choreo recover booking,",
            "               replay tools; an administrator's password)",
        ]
    if ep.gateway_auth == "none":
        lines.append(
            "  auth        none: anyone reaching the gateway may act as any user (choreo up --auth: JWTs)"
        )
    else:
        lines.append(f"  auth        {ep.gateway_auth}: the gateway wants authorization: Bearer <token>")
    for what, token in ep.tokens.items():
        lines.append(f"  token       {what:<8} {token}")
    if ep.tokens:
        lines.append(
            f"              (curl -H 'authorization: Bearer <token>' {ep.http_base}/v1/bookings;"
            " grpcurl -H the same)"
        )
    return lines


def _mail_lines(ep: Endpoints) -> list[str]:
    if ep.mail is None:
        return []
    if ep.mail.mail_dir is None:
        return [f"  mail        sent to {ep.mail.server}   (NOTIFICATION_SMTP_HOST; none is kept here)"]
    return [
        f"  mail        {ep.mail.mail_dir}   (one .eml per email)",
        f"              (the SMTP sink at {ep.mail.server}; export NOTIFICATION_SMTP_HOST to send for real)",
    ]
