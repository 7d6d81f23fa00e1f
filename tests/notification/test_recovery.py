"""Notification rebuilt by replay of NOTIFICATION after losing its database: nobody is emailed twice,
and a booking's later email still finds its address."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.notification.v1 import events_pb2 as notification_events
from choreoctl.stack.natsserver import NatsServer
from notification.build import build
from notification.messages import Kind
from notification.tables import bookings, notifications
from tests.notification.facts import cancelled, confirmed, created, message_id
from tests.notification.smtpserver import SmtpServer
from tests.notification.test_service import at_least, settings
from tests.streams import BOOKING
from tests.support import eventually, publish, row_count, running, stream_count, stream_envelopes


async def test_a_lost_database_is_rebuilt_and_nobody_is_emailed_twice(
    nats_server: NatsServer, smtp: SmtpServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    first = [
        created("b-1", "ann@example.com"),
        created("b-2"),
        created("b-3", "cy@example.com"),
        confirmed("b-3"),
    ]
    async with running(build(settings(nats_server, f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", smtp))):
        for env in first:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", 4), message="the first NotificationSent")
    assert len(smtp.received) == 3
    # The database is lost, and the durable consumer with it (a new NATS account, say):
    # every booking fact comes again from the start of BOOKING.
    await js.delete_consumer("BOOKING", "notification")
    later = [confirmed("b-1"), cancelled("b-2", "sold_out")]
    async with running(build(settings(nats_server, f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", smtp))) as svc:
        assert svc.engine is not None
        assert (await row_count(svc.engine, notifications), await row_count(svc.engine, bookings)) == (4, 3)
        for env in later:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", 6), message="the later NotificationSent")
    ids = smtp.message_ids()
    assert sorted(ids) == sorted(message_id(env) for env in [first[0], first[2], first[3], later[0]])
    confirmation = smtp.received[-1]
    assert confirmation.rcpt_tos == ("ann@example.com",)
    assert "b-1 is confirmed" in confirmation.part("plain")
    assert "EUR" not in confirmation.part("plain")  # the amount is not in any notification fact
    assert await stream_count(js, "DLQ") == 0
    facts = [
        env.decode(notification_events.NotificationSent) for env in await stream_envelopes(js, "NOTIFICATION")
    ]
    assert len(facts) == 6
    [b2] = [f for f in facts if f.booking_id == "b-2" and f.kind == Kind.NOTIFICATION_KIND_BOOKING_CANCELLED]
    assert b2.status == notification_events.NOTIFICATION_STATUS_SKIPPED  # still no address after the rebuild
