"""The demo's emails (read from a real SMTP sink, sent with a real SMTP client) and stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import aiosmtplib
import httpx
from google.protobuf import json_format

from choreo.gateway.v1 import gateway_pb2
from choreoctl.demo_emails import collect_emails, mail_note, subjects_by_booking
from choreoctl.demo_stats import ExpectedStats, fetch_stats, stats_lines, window_start
from choreoctl.stack.mailroute import exported_server, sink_route
from choreoctl.stack.mailsink import MailSink
from tests.cli.test_mailsink import message


async def send(sink: MailSink, booking_id: str, subject: str) -> None:
    await aiosmtplib.send(message(booking_id, subject), hostname=sink.host, port=sink.port, start_tls=False)


async def test_each_bookings_emails_are_found_by_their_header_in_arrival_order(tmp_path: Path) -> None:
    async with MailSink(tmp_path / "mail") as sink:
        await send(sink, "b-1", "We received your booking b-1")
        await send(sink, "other", "Not a demo booking")
        await send(sink, "b-2", "We received your booking b-2")
        await send(sink, "b-1", "Your booking b-1 is confirmed")
        route = sink_route({}, tmp_path / "mail", sink.host, sink.port)
        found = await subjects_by_booking(route, ["b-1", "b-2"], timeout=0.2)
    assert found is not None
    assert found["b-1"] == ["We received your booking b-1", "Your booking b-1 is confirmed"]
    assert found["b-2"] == ["We received your booking b-2"]


async def test_collecting_waits_for_the_emails_still_on_their_way(tmp_path: Path) -> None:
    async with MailSink(tmp_path / "mail") as sink:
        await send(sink, "b-1", "received b-1")
        waiting = asyncio.create_task(collect_emails(tmp_path / "mail", ["b-1"], timeout=10))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "one email of two: it waits"
        await send(sink, "b-1", "confirmed b-1")
        found = await asyncio.wait_for(waiting, 5)
    assert [m.subject for m in found["b-1"]] == ["received b-1", "confirmed b-1"]
    started = asyncio.get_running_loop().time()
    late = await collect_emails(tmp_path / "mail", ["b-9"], timeout=0.3)
    assert late == {"b-9": []} and asyncio.get_running_loop().time() - started < 2


async def test_with_an_exported_server_the_demo_says_where_emails_went(tmp_path: Path) -> None:
    route = exported_server({"NOTIFICATION_SMTP_HOST": "smtp.example.com", "NOTIFICATION_SMTP_PORT": "2525"})
    assert route is not None
    assert await subjects_by_booking(route, ["b-1"]) is None
    assert await subjects_by_booking(None, ["b-1"]) is None
    assert mail_note(route) == (
        "Emails went to the SMTP server smtp.example.com:2525 (NOTIFICATION_SMTP_HOST); look for them there."
    )
    sink = sink_route({}, tmp_path / "mail", "127.0.0.1", 2525)
    assert (
        mail_note(sink)
        == f"Emails: {tmp_path / 'mail'} (one .eml per email, from the SMTP sink at 127.0.0.1:2525)."
    )


SETTLED = [
    ("CONFIRMED", "", 12_500, "EUR"),
    ("CONFIRMED", "", 4_200, "EUR"),
    ("CANCELLED", "card_declined", 12_500, "EUR"),
    ("CANCELLED", "insufficient_funds", 12_500, "EUR"),
    ("CONFIRMED", "", 1_000, "USD"),
]


def test_expected_stats_add_up_the_demos_bookings() -> None:
    expected = ExpectedStats.of(SETTLED)
    assert (expected.created, expected.confirmed, expected.cancelled) == (5, 3, 2)
    assert expected.reasons == {"card_declined": 1, "insufficient_funds": 1}
    assert expected.amounts == {"EUR": 16_700, "USD": 1_000}
    agreeing = stats_response(5, 3, 2)
    assert expected.differences(agreeing) == []
    short = stats_response(4, 3, 1)
    assert expected.differences(short) == [
        "bookings_created is 4, expected 5",
        "bookings_cancelled is 1, expected 2",
        "cancellation_reasons is {'card_declined': 1},"
        " expected {'card_declined': 1, 'insufficient_funds': 1}",
    ]


def stats_response(created: int, confirmed: int, cancelled: int) -> gateway_pb2.GetBookingStatsResponse:
    reasons = {"card_declined": 1, "insufficient_funds": 1} if cancelled == 2 else {"card_declined": 1}
    return gateway_pb2.GetBookingStatsResponse(
        bookings_created=created,
        bookings_confirmed=confirmed,
        bookings_cancelled=cancelled,
        cancellation_reasons=reasons,
        confirmed_amount_cents_by_currency={"EUR": 16_700, "USD": 1_000},
        settle_p50_ms=12.4,
        settle_p95_ms=30.2,
        settle_p99_ms=31.0,
    )


def test_the_window_starts_at_the_whole_second_in_rfc3339() -> None:
    moment = dt.datetime(2026, 12, 1, 19, 5, 7, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert window_start(moment) == "2026-12-01T17:05:07Z"


async def test_stats_are_asked_again_until_analytics_has_counted_every_booking() -> None:
    """The gateway answers as the protobuf JSON mapping (int64 as strings, camelCase or proto names)."""
    answers = [
        httpx.Response(503, json={"code": "UNAVAILABLE", "message": "analytics unavailable"}),
        httpx.Response(200, json={"bookings_created": "4", "bookings_confirmed": "3"}),
        httpx.Response(200, text=_camel_json(stats_response(5, 3, 2))),
    ]
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway), base_url="http://gw") as http:
        stats, problems = await fetch_stats(
            http, "2026-12-01T17:05:07Z", ExpectedStats.of(SETTLED), token="admin-token", interval=0.01
        )
    assert problems == [] and stats is not None and stats.bookings_created == 5
    assert len(seen) == 3
    assert seen[0].url.params["since"] == "2026-12-01T17:05:07Z"
    assert seen[0].headers["authorization"] == "Bearer admin-token"
    assert stats_lines(stats) == [
        "  bookings    created 5, confirmed 3, cancelled 2",
        "  cancelled   card_declined 1, insufficient_funds 1",
        "  confirmed   EUR 167.00, USD 10.00",
        "  settled in  p50 12 ms, p95 30 ms, p99 31 ms (created to confirmed or cancelled)",
    ]


async def test_stats_that_never_agree_are_problems() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="analytics unavailable")

    async with httpx.AsyncClient(transport=httpx.MockTransport(down), base_url="http://gw") as http:
        stats, problems = await fetch_stats(
            http, "2026-12-01T17:05:07Z", ExpectedStats.of(SETTLED), timeout=0.1, interval=0.01
        )
    assert stats is None
    assert problems == ["GET /v1/stats answered 503: analytics unavailable"]


def _camel_json(stats: gateway_pb2.GetBookingStatsResponse) -> str:
    return json.dumps(json_format.MessageToDict(stats))
