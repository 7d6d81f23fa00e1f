"""Signed keyset page tokens: they read back only for the query, and with the key, they were made for."""

from __future__ import annotations

import base64
import json

import pytest

from gateway import paging
from gateway.paging import Cursor, InvalidPageToken, PageTokens, TraceCursor

KEY = b"k" * 32


def test_a_token_reads_back_for_the_same_filters() -> None:
    tokens = PageTokens(KEY)
    cursor = Cursor(1_700_000_000_123_456, "b-42")
    token = tokens.bookings_token(cursor, user_id="u1", status="CONFIRMED")
    assert "b-42" not in token  # opaque to the eye, at least
    assert tokens.bookings_cursor(token, user_id="u1", status="CONFIRMED") == cursor


def test_a_trace_token_reads_back_for_the_same_workflow_only() -> None:
    tokens = PageTokens(KEY)
    cursor = TraceCursor(1_700_000_000_000_000, "PAYMENT", 7, "e-1")
    token = tokens.trace_token(cursor, correlation_id="wf-1")
    assert tokens.trace_cursor(token, correlation_id="wf-1") == cursor
    with pytest.raises(InvalidPageToken, match="for this query"):
        tokens.trace_cursor(token, correlation_id="wf-2")
    with pytest.raises(InvalidPageToken):  # a trace token is no ListBookings token
        tokens.bookings_cursor(token, user_id="", status="")


@pytest.mark.parametrize(
    "user_id,status", [("u2", "CONFIRMED"), ("u1", ""), ("", "CONFIRMED"), ("u1C", "ONFIRMED")]
)
def test_a_token_is_refused_for_other_filters(user_id: str, status: str) -> None:
    tokens = PageTokens(KEY)
    token = tokens.bookings_token(Cursor(1, "b"), user_id="u1", status="CONFIRMED")
    with pytest.raises(InvalidPageToken, match="for this query"):
        tokens.bookings_cursor(token, user_id=user_id, status=status)


def test_a_token_of_another_key_is_refused() -> None:
    token = PageTokens(KEY).bookings_token(Cursor(1, "b"), user_id="", status="")
    with pytest.raises(InvalidPageToken):
        PageTokens(b"other").bookings_cursor(token, user_id="", status="")
    # Without a secret every process draws its own key.
    with pytest.raises(InvalidPageToken):
        PageTokens().bookings_cursor(
            PageTokens().bookings_token(Cursor(1, "b"), user_id="", status=""), user_id="", status=""
        )


def test_a_tampered_position_is_refused() -> None:
    tokens = PageTokens(KEY)
    token = tokens.bookings_token(Cursor(1, "b"), user_id="", status="")
    _, mac = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps([1, 10**30, "b"]).encode()).decode().rstrip("=")
    with pytest.raises(InvalidPageToken):
        tokens.bookings_cursor(f"{forged}.{mac}", user_id="", status="")


@pytest.mark.parametrize(
    "position", [(10**30, "b"), (-(2**63) - 1, "b"), (True, "b"), (1, 2), (1,), (1, "b", "extra"), (1.5, "b")]
)
def test_a_signed_token_of_the_wrong_shape_is_refused(position: tuple[int | str, ...]) -> None:
    """Even a token signed with the key (shared by gateways of other versions) is checked."""
    tokens = PageTokens(KEY)
    token = tokens.encode("bookings", ("", ""), position)
    with pytest.raises(InvalidPageToken, match="version"):
        tokens.bookings_cursor(token, user_id="", status="")


def test_a_token_of_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = PageTokens(KEY)
    monkeypatch.setattr(paging, "_VERSION", 2)
    token = tokens.bookings_token(Cursor(1, "b"), user_id="", status="")
    monkeypatch.undo()
    with pytest.raises(InvalidPageToken, match="version"):
        tokens.bookings_cursor(token, user_id="", status="")


@pytest.mark.parametrize("token", ["garbage!", "e30", "e30.", ".", "a.b.c", "é.é", "A" * 2000])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        PageTokens(KEY).bookings_cursor(token, user_id="", status="")


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        PageTokens(b"")
