"""Opaque keyset page tokens for ListBookings.

A token holds the position after the last booking of a page (newest first:
``created_at``, then ``booking_id``) and the filters it was made for, so it
cannot be replayed against a different query. It is base64url JSON: opaque
to clients, cheap to check, and never an offset (pages stay stable while
bookings are added).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

_VERSION = 1


class InvalidPageToken(ValueError):
    """The token was not made by this API for this query."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last booking of the previous page."""

    created_at_us: int
    booking_id: str


def _filters(user_id: str, status: str) -> str:
    return f"{user_id}\x1f{status}"


def encode_page_token(cursor: Cursor, *, user_id: str, status: str) -> str:
    """The token of the page that starts after ``cursor``, for these filters."""
    raw = json.dumps(
        [_VERSION, cursor.created_at_us, cursor.booking_id, _filters(user_id, status)], separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, *, user_id: str, status: str) -> Cursor:
    """Reads a token back.

    Raises:
        InvalidPageToken: it is malformed, or was made for other filters.
    """
    if len(token) > 1024:
        raise InvalidPageToken("is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, created_at_us, booking_id, filters = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidPageToken("is not a page token from this API") from exc
    if version != _VERSION or not isinstance(created_at_us, int) or not isinstance(booking_id, str):
        raise InvalidPageToken("is not a page token from this API")
    if isinstance(created_at_us, bool) or filters != _filters(user_id, status):
        raise InvalidPageToken("was made for a different user_id or status filter")
    return Cursor(created_at_us, booking_id)
