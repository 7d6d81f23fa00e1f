"""Signed, opaque keyset page tokens (ListBookings and the workflow traces).

A token holds the position after the last item of a page (never an offset, so
pages stay stable while items are added) and is bound to the query it came
from: its HMAC-SHA256 covers the kind of list, the filters and the position,
so a token replayed against another query, edited, or made up is refused
before anything of it reaches the database. The key is
``GATEWAY_PAGE_TOKEN_SECRET``; unset, each process draws a random one (fine for
one replica: a token then lasts as long as the process, and a client whose
token is refused starts again from the first page).

Format: ``base64url(json position) "." base64url(mac)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence

from gateway.readmodel.model import Cursor, TraceCursor

_VERSION = 1
#: Longest token accepted (a position is a few ids and integers).
MAX_TOKEN_LENGTH = 1024
_KEY_BYTES = 32
_SIGNED_INTS = range(-(2**63), 2**63)


class InvalidPageToken(ValueError):
    """The token was not made by this gateway for this query."""


_BOOKINGS = "bookings"
_TRACE = "trace"

Position = tuple[int | str, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Makes and checks page tokens with one key.

    Args:
        secret: The HMAC key; ``None`` draws a random one for this process.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is not None and not secret:
            raise ValueError("the page token secret must not be empty")
        self._key = secret if secret is not None else secrets.token_bytes(_KEY_BYTES)

    def _mac(self, kind: str, query: Sequence[str], body: bytes) -> bytes:
        # Each part is length-prefixed, so no two (kind, query, body) sign the same bytes.
        message = hashlib.sha256()
        for part in (kind.encode(), *(q.encode() for q in query), body):
            message.update(len(part).to_bytes(8, "big"))
            message.update(part)
        return hmac.new(self._key, message.digest(), hashlib.sha256).digest()

    def encode(self, kind: str, query: Sequence[str], position: Position) -> str:
        """The token of the page after ``position`` of the ``kind`` list with these filters."""
        body = json.dumps([_VERSION, *position], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(kind, query, body))}"

    def decode(self, token: str, kind: str, query: Sequence[str], shape: Sequence[type]) -> Position:
        """The position in ``token``, if this gateway made it for this list and these filters.

        ``shape`` is the type of each element of the position (``int`` or ``str``);
        integers must fit a signed 64-bit column.

        Raises:
            InvalidPageToken: malformed, tampered with, signed with another key, or
                made for another query. The message is safe to show to the client.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidPageToken("is too long")
        body_text, dot, mac_text = token.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidPageToken("is not a page token from this API") from None
        if not dot or not hmac.compare_digest(mac, self._mac(kind, query, body)):
            raise InvalidPageToken("is not a page token from this API for this query")
        # Signed by us: still checked, as a key may be shared by gateways of other versions.
        try:
            version, *values = json.loads(body)
        except (ValueError, TypeError):
            raise InvalidPageToken("is not a page token from this API") from None
        if version != _VERSION or len(values) != len(shape) or not all(map(_fits, values, shape)):
            raise InvalidPageToken("is not a page token of this version of the API")
        return tuple(values)

    def bookings_token(self, cursor: Cursor, *, user_id: str, status: str) -> str:
        """The ListBookings token of the page after ``cursor``, for these filters."""
        return self.encode(_BOOKINGS, (user_id, status), (cursor.created_at_us, cursor.booking_id))

    def bookings_cursor(self, token: str, *, user_id: str, status: str) -> Cursor:
        """Reads a ListBookings token back (see ``decode``)."""
        created_at_us, booking_id = self.decode(token, _BOOKINGS, (user_id, status), (int, str))
        return Cursor(int(created_at_us), str(booking_id))

    def trace_token(self, cursor: TraceCursor, *, correlation_id: str) -> str:
        """The trace token of the page after ``cursor`` of this workflow."""
        position = (cursor.occurred_at_us, cursor.stream, cursor.stream_sequence, cursor.event_id)
        return self.encode(_TRACE, (correlation_id,), position)

    def trace_cursor(self, token: str, *, correlation_id: str) -> TraceCursor:
        """Reads a trace token back (see ``decode``)."""
        occurred, stream, sequence, event_id = self.decode(
            token, _TRACE, (correlation_id,), (int, str, int, str)
        )
        return TraceCursor(int(occurred), str(stream), int(sequence), str(event_id))


def _fits(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int and value in _SIGNED_INTS
    return type(value) is kind
