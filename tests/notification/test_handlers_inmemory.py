"""Notification's routes without a nats-server (``choreo.testing``), against a real SMTP server.

Only the routes are under test: the ``prepare`` step (decide, send) and the transaction
(the rows, the ``NotificationSent`` emitted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from choreo.errors import Failure, PermanentError, classify
from choreo.inbox import inbox_table
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.testing import HandlerHarness, handler_harness
from notification.bookings import BookingNotYetKnown, Bookings, FirstEmailPending
from notification.handlers import DURABLE, Notifier, SmtpGaveUp, routes
from notification.messages import format_amount, reason_in_words
from notification.migrations import MIGRATIONS
from notification.settings import SmtpConfig
from notification.smtp import Mailer, SmtpUnavailable
from notification.tables import bookings, notifications
from tests.notification.facts import DOMAIN, MAIL_FROM, cancelled, confirmed, created, message_id
from tests.notification.smtpserver import SmtpServer
from tests.support import prepared_schema, row_count

Status = notification_events.NotificationStatus


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_schema(tmp_path_factory, MIGRATIONS, "notification")


def notifier(smtp: SmtpServer, max_age: float = 86_400, retry: float = 0.0) -> Notifier:
    config = SmtpConfig(smtp.host, smtp.port, "none", None, None, None, 2)
    mailer = Mailer(config, sender="bookings@example.com", local_hostname=DOMAIN)
    return Notifier(
        mailer,
        Bookings(),
        mail_from=MAIL_FROM,
        message_id_domain=DOMAIN,
        max_fact_age_seconds=max_age,
        retry_seconds=retry,
    )


@pytest.fixture
async def h(schema: Path, smtp: SmtpServer) -> AsyncIterator[HandlerHarness]:
    n = notifier(smtp)
    async with handler_harness(routes(n), consumer=DURABLE, schema=schema) as h:
        n.store.attach(h.engine)
        yield h


async def test_a_new_booking_is_emailed_recorded_and_published(h: HandlerHarness, smtp: SmtpServer) -> None:
    env = created("b-1", "ann@example.com")
    handled = await h.handle(env)
    [sent] = handled.decoded(notification_events.NotificationSent)
    assert (sent.booking_id, sent.status, sent.recipient) == (
        "b-1",
        Status.NOTIFICATION_STATUS_SENT,
        "ann@example.com",
    )
    assert sent.message_id == message_id(env) == f"<{env.id}@{DOMAIN}>"
    [fact] = handled.emitted
    assert (fact.subject, fact.correlation_id, fact.causation_id) == ("notification.sent", "wf-b-1", env.id)
    assert smtp.message_ids() == [message_id(env)]
    assert [await row_count(h.engine, t) for t in (bookings, notifications)] == [1, 1]


async def test_a_redelivered_fact_is_not_emailed_again(h: HandlerHarness, smtp: SmtpServer) -> None:
    env = created("b-1", "ann@example.com")
    await h.handle(env)
    again = await h.handle(env, stream_sequence=2)
    assert (again.duplicate, again.emitted) == (True, ())
    assert len(smtp.received) == 1  # the inbox is read before the prepare step


async def test_a_settled_booking_not_yet_known_fails_and_sends_nothing(
    h: HandlerHarness, smtp: SmtpServer
) -> None:
    with pytest.raises(BookingNotYetKnown) as failed:
        await h.handle(confirmed("b-unknown"))
    # Waited for (its BookingCreated may be handled by another replica right now) ...
    assert classify(failed.value) is Failure.TRANSIENT
    assert smtp.received == []
    assert [await row_count(h.engine, t) for t in (notifications, inbox_table)] == [0, 0]


async def test_a_booking_still_unknown_past_the_retry_window_is_dead_lettered(
    schema: Path, smtp: SmtpServer
) -> None:
    n = notifier(smtp, retry=60)
    async with handler_harness(routes(n), consumer=DURABLE, schema=schema) as h:
        n.store.attach(h.engine)
        with pytest.raises(SmtpGaveUp) as failed:
            await h.handle(confirmed("b-lost", ago_seconds=120))
    # ... but not for ever: dead-lettered, re-drivable once its BookingCreated is handled.
    assert classify(failed.value) is Failure.PERMANENT
    assert isinstance(failed.value.__cause__, BookingNotYetKnown)
    assert smtp.received == []


async def test_the_cancellation_email_gives_the_reason_in_words(h: HandlerHarness, smtp: SmtpServer) -> None:
    await h.handle(created("b-2", "bob@example.com", amount=1999))
    handled = await h.handle(cancelled("b-2", "payment_timeout"))
    [sent] = handled.decoded(notification_events.NotificationSent)
    assert sent.kind == notification_events.NotificationKind.NOTIFICATION_KIND_BOOKING_CANCELLED
    email = smtp.received[-1]
    for part in ("plain", "html"):
        assert "the payment did not complete in time" in email.part(part)
        assert "19.99 EUR" in email.part(part)


async def test_every_value_is_escaped_in_the_html_part(h: HandlerHarness, smtp: SmtpServer) -> None:
    await h.handle(created("b-3", "cy@example.com"))
    await h.handle(cancelled("b-3", "<script>alert(1)</script>"))
    email = smtp.received[-1]
    assert "<script>" not in email.part("html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.part("html")
    assert "<script>alert(1)</script>" in email.part("plain")


async def test_a_header_that_would_inject_lines_is_refused_for_good(
    h: HandlerHarness, smtp: SmtpServer
) -> None:
    with pytest.raises(PermanentError):
        await h.handle(created("b-4\r\nBcc: evil@example.com", "dee@example.com"))
    assert smtp.received == []


async def test_a_fact_older_than_the_limit_is_skipped(schema: Path, smtp: SmtpServer) -> None:
    n = notifier(smtp, max_age=60)
    async with handler_harness(routes(n), consumer=DURABLE, schema=schema) as h:
        n.store.attach(h.engine)
        handled = await h.handle(created("b-5", "eve@example.com", ago_seconds=120))
        [sent] = handled.decoded(notification_events.NotificationSent)
        assert (sent.status, sent.recipient) == (Status.NOTIFICATION_STATUS_SKIPPED, "")
        assert (sent.detail.startswith("too old"), sent.message_id) == (True, "")
        # The booking is remembered all the same: its settlement, when recent, is emailed about.
        fresh = await h.handle(confirmed("b-5"))
        assert (
            fresh.decoded(notification_events.NotificationSent)[0].status == Status.NOTIFICATION_STATUS_SENT
        )
    assert [r.rcpt_tos for r in smtp.received] == [("eve@example.com",)]


async def test_no_age_limit_when_it_is_zero(schema: Path, smtp: SmtpServer) -> None:
    n = notifier(smtp, max_age=0)
    async with handler_harness(routes(n), consumer=DURABLE, schema=schema) as h:
        n.store.attach(h.engine)
        handled = await h.handle(created("b-6", "fay@example.com", ago_seconds=400 * 86_400))
    assert handled.decoded(notification_events.NotificationSent)[0].status == Status.NOTIFICATION_STATUS_SENT
    assert len(smtp.received) == 1


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("card_declined", "your card was declined"),
        ("insufficient_funds", "your card has insufficient funds"),
        ("invalid_payment_token", "the payment details could not be used"),
        ("sold_out", "it is sold out"),
        ("cancelled_by_user", "you cancelled it"),
        ("payment_timeout", "the payment did not complete in time"),
        ("seat_map_changed", "seat map changed"),
        ("", "no reason was given"),
    ],
)
def test_reasons_in_words(code: str, words: str) -> None:
    assert reason_in_words(code) == words


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [(2500, "EUR", "25.00 EUR"), (5, "USD", "0.05 USD"), (1200, "JPY", "1200 JPY")],
)
def test_amounts(cents: int, currency: str, text: str) -> None:
    assert format_amount(cents, currency) == text


async def test_a_later_email_waits_for_the_first_one(h: HandlerHarness, smtp: SmtpServer) -> None:
    first, then = created("b-7", "gus@example.com"), confirmed("b-7")
    smtp.stop()
    with pytest.raises(SmtpUnavailable):
        await h.handle(first)
    with pytest.raises(FirstEmailPending) as waiting:
        await h.handle(then)  # the booking is known, its first email is not sent
    assert classify(waiting.value) is Failure.TRANSIENT  # waits as long as the first one does
    smtp.start()
    with pytest.raises(FirstEmailPending):
        await h.handle(then)
    await h.handle(first)
    await h.handle(then)
    assert smtp.message_ids() == [message_id(first), message_id(then)]


@pytest.mark.parametrize(
    "address", ["a@b.com, c@d.com", "no-at", "x\r\nBcc: e@f.com", "é@x.com", "a b@c.com"]
)
async def test_a_malformed_address_is_skipped_not_sent(
    h: HandlerHarness, smtp: SmtpServer, address: str
) -> None:
    handled = await h.handle(created("b-8", address))
    [sent] = handled.decoded(notification_events.NotificationSent)
    assert (sent.status, sent.recipient) == (Status.NOTIFICATION_STATUS_SKIPPED, "")
    assert "malformed" in sent.detail
    assert smtp.received == []
