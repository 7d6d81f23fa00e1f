"""Signed keyset page tokens: they read back only for the query, and with the key, they were made for."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from gateway.application import paging
from gateway.application.paging import InvalidPageToken, PageTokens
from gateway.readmodel.model import Cursor, TraceCursor
from tests.gateway.fakes import FakeBookingService
from tests.support import eventually

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


# --- Traces, a page at a time, through both APIs ---


async def _finished_workflow(http: httpx.AsyncClient) -> tuple[str, str]:
    body = {"user_id": "u1", "amount_cents": 100, "currency": "EUR", "payment_token": "tok_visa"}
    created = (await http.post("/v1/bookings", json=body)).json()
    booking_id = created["booking_id"]
    await http.get(f"/v1/bookings/{booking_id}", params={"wait": 5})

    async def traced() -> bool:  # the terminal fact is in the trace index too
        return len((await http.get(f"/v1/bookings/{booking_id}/trace")).json().get("events", [])) == 3

    await eventually(traced)
    return booking_id, created["correlation_id"]


async def test_a_trace_pages_over_http(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    booking_id, correlation_id = await _finished_workflow(http)
    whole = (await http.get(f"/v1/traces/{correlation_id}")).json()
    assert whole["next_page_token"] == "" and len(whole["events"]) == 3

    first = (await http.get(f"/v1/bookings/{booking_id}/trace", params={"page_size": 2})).json()
    assert len(first["events"]) == 2 and first["next_page_token"]
    rest = (
        await http.get(
            f"/v1/traces/{correlation_id}", params={"page_size": 2, "page_token": first["next_page_token"]}
        )
    ).json()
    assert rest["next_page_token"] == ""
    assert first["events"] + rest["events"] == whole["events"]

    _, other = await _finished_workflow(http)
    for params, field in (
        ({"page_token": first["next_page_token"]}, "page_token"),  # another workflow's token
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
    ):
        bad = await http.get(f"/v1/traces/{other}", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == field, params


async def test_a_trace_pages_over_grpc(
    http: httpx.AsyncClient, stub: Any, fake_booking: FakeBookingService
) -> None:
    booking_id, correlation_id = await _finished_workflow(http)
    events: list[str] = []
    token = ""
    pages = 0
    while True:
        request = gw.GetWorkflowTraceRequest(booking_id=booking_id, page_size=1, page_token=token)
        page = await stub.GetWorkflowTrace(request)
        assert page.correlation_id == correlation_id
        events += [e.event_type.rsplit(".", 1)[1] for e in page.events]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert events == ["BookingCreated", "PaymentSucceeded", "BookingConfirmed"] and pages == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetWorkflowTrace(
            gw.GetWorkflowTraceRequest(correlation_id=correlation_id, page_token="x.y")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("page_token:")
