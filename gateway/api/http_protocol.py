"""uvicorn's h11 protocol with a request read deadline, a connection cap and JSON errors.

uvicorn has no timeout for receiving a request: ``timeout_keep_alive`` covers
only the time between requests, and every byte received resets it, so a
client that trickles its headers a byte at a time holds a connection (and a
slot under the connection cap) forever: slowloris. The timeouts asked for
upstream in https://github.com/encode/uvicorn/issues/157
(``--timeout-request-start``, ``--timeout-request-complete``) were never
added, and ASGI middleware runs too late (after the headers were parsed). So
the protocol arms a deadline when a connection opens, and when the first
byte of each further request arrives, and disarms it once the request
(headers and body) is in; a connection still sending at the deadline is
closed. The deadline never covers the response, so long polls are not cut.

The same class caps open connections: a request on a connection over the cap
is answered 503 and the connection closed (uvicorn's ``limit_concurrency``
does the same in plain text), and answers the requests h11 cannot parse (a
header block over ``h11_max_incomplete_event_size`` included) 400 in the
documented JSON shape instead of plain text.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.api.http_errors import error_body, service_unavailable

log = logging.getLogger(__name__)

#: The client is still sending a request in these states (IDLE: its head is incomplete).
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


class LimitedH11Protocol(H11Protocol):
    """``H11Protocol`` plus a request read deadline and a connection cap (see the module doc).

    Configure a subclass with ``limited_protocol``.
    """

    read_timeout: float = 10.0
    max_connections: int = 1024
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.app = service_unavailable
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in _RECEIVING:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = error_body("INVALID_ARGUMENT", msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._on_read_timeout)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _on_read_timeout(self) -> None:
        self._read_deadline = None
        if self.conn.their_state in _RECEIVING and not self.transport.is_closing():
            log.debug("closing %s: no complete request within %gs", self.client, self.read_timeout)
            self.transport.close()


def limited_protocol(*, read_timeout: float, max_connections: int) -> type[LimitedH11Protocol]:
    """A ``LimitedH11Protocol`` class with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "ConfiguredH11Protocol",
        (LimitedH11Protocol,),
        {"read_timeout": read_timeout, "max_connections": max_connections},
    )
