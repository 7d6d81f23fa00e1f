"""Notification and analytics beside booking, payment and the gateway, every one its own process.

The whole system as deployed: a booking's emails reach a real SMTP server, its
trace shows them (``NotificationSent`` on the NOTIFICATION stream), the gateway's
stats are what was created, analytics stopped gives UNAVAILABLE / 503 and nothing
else, and analytics rebuilt from an empty database answers the same stats.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.e2e.client import EXPECTED, request, wait_terminal
from tests.e2e.stack import JOINING, Stack
from tests.notification.smtpserver import SmtpServer
from tests.support import eventually

NOTIFICATION_SENT = "choreo.notification.v1.NotificationSent"


@pytest.fixture
def joined(nats_server: NatsServer, tmp_path: Path, smtp: SmtpServer) -> Iterator[Stack]:
    env = {
        "NOTIFICATION_SMTP_HOST": smtp.host,
        "NOTIFICATION_SMTP_PORT": str(smtp.port),
        "NOTIFICATION_SMTP_SECURITY": "none",
        "NOTIFICATION_MAIL_FROM": "Bookings <bookings@example.com>",
    }
    s = Stack(tmp_path, nats_server.url, env=env, joining=JOINING)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def address(token: str) -> str:
    return f"{token.lower()}@example.com"


async def test_emails_traces_and_stats_of_the_whole_system(joined: Stack, smtp: SmtpServer) -> None:
    async with grpc.aio.insecure_channel(joined.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        bookings: dict[str, gw.Booking] = {}
        for token in EXPECTED:
            req = request(token)
            req.email = address(token)
            bookings[token] = (await stub.CreateBooking(req)).booking
        silent = (await stub.CreateBooking(request("tok_visa", user="user-2"))).booking  # no email
        for booking in [*bookings.values(), silent]:
            await wait_terminal(stub, booking.booking_id)

        async def all_emails() -> bool:
            return len(smtp.received) >= 2 * len(bookings)

        await eventually(all_emails, timeout=30, message="two emails per booking with an address")
        by_booking: dict[str, list[str]] = {}
        for mail in smtp.received:
            booking_id = str(mail.message["X-Choreo-Booking-Id"])
            by_booking.setdefault(booking_id, []).append(str(mail.message["Subject"]))
            assert booking_id in str(mail.message["Subject"])
            token = next(t for t, b in bookings.items() if b.booking_id == booking_id)
            assert mail.rcpt_tos == (address(token),)
            assert mail.message["X-Choreo-Correlation-Id"] == bookings[token].correlation_id
            assert mail.part("plain") and mail.part("html")
        assert len(smtp.message_ids()) == len(set(smtp.message_ids())) == 2 * len(bookings)
        assert silent.booking_id not in by_booking
        for token, booking in bookings.items():
            received, outcome = by_booking[booking.booking_id]
            assert received.startswith("We received your booking")
            assert ("confirmed" if EXPECTED[token][1] == "" else "cancelled") in outcome

        # The trace of a workflow shows its emails, and a booking without an address its skips.
        async def notifications(booking_id: str) -> list[gw.TraceEvent]:
            trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking_id))
            found = [e for e in trace.events if e.event_type == NOTIFICATION_SENT]
            return found if len(found) == 2 else []

        declined = bookings["tok_chargeDeclined"].booking_id
        sent = await eventually(lambda: notifications(declined), timeout=15, message="two NotificationSent")
        assert {e.source for e in sent} == {"notification"}
        assert await eventually(lambda: notifications(silent.booking_id), timeout=15)

        # Analytics counts what was created.
        expected_reasons = {reason: 1 for _, reason in EXPECTED.values() if reason}
        total = len(bookings) + 1

        async def stats() -> gw.GetBookingStatsResponse | None:
            got = await stub.GetBookingStats(gw.GetBookingStatsRequest())
            settled = got.bookings_confirmed + got.bookings_cancelled
            return got if got.bookings_created == total and settled == total else None

        first = await eventually(stats, timeout=15, message="the stats of every booking")
        assert (first.bookings_confirmed, first.bookings_cancelled) == (2, 3)
        assert dict(first.cancellation_reasons) == expected_reasons
        assert dict(first.confirmed_amount_cents_by_currency) == {"EUR": 2 * 4200}
        assert 0 < first.settle_p50_ms <= first.settle_p95_ms <= first.settle_p99_ms
        async with httpx.AsyncClient(base_url=joined.http_base) as http:
            body = (await http.get("/v1/stats")).json()
            assert body["bookings_created"] == str(total)
            assert body["cancellation_reasons"] == {k: str(v) for k, v in expected_reasons.items()}

            # Analytics down: its stats are unavailable, and nothing else is.
            joined.terminate("analytics")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetBookingStats(gw.GetBookingStatsRequest())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "analytics" in (refused.value.details() or "")
            assert (await http.get("/v1/stats")).status_code == 503
            assert (await http.get("/readyz")).status_code == 200
            req = request("tok_visa", user="user-3")
            req.email = "late@example.com"
            late = (await stub.CreateBooking(req)).booking
            assert (await wait_terminal(stub, late.booking_id)).status == gw.BOOKING_STATUS_CONFIRMED

            async def late_emails() -> bool:
                return sum(m.rcpt_tos == ("late@example.com",) for m in smtp.received) == 2

            await eventually(late_emails, timeout=20, message="the emails of a booking made meanwhile")

        # Analytics from an empty database: the replay of BOOKING gives the same stats, plus the new one.
        database = joined.database_urls["analytics"].removeprefix("sqlite+aiosqlite:///")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(database + suffix)
        joined.start("analytics")
        total += 1

        async def rebuilt() -> gw.GetBookingStatsResponse | None:
            got = await stub.GetBookingStats(gw.GetBookingStatsRequest())
            return got if got.bookings_created == total and got.bookings_confirmed == 3 else None

        again = await eventually(rebuilt, timeout=20, message="the stats rebuilt by replay")
        assert dict(again.cancellation_reasons) == expected_reasons
        assert dict(again.confirmed_amount_cents_by_currency) == {"EUR": 3 * 4200}
    assert joined.exited_on_their_own() == []
