"""The notification service in-process: a real nats-server, a real SMTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import pytest
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.envelope import Envelope
from choreo.notification.v1 import events_pb2 as notification_events
from choreoctl.stack.natsserver import NatsServer
from notification.build import build
from notification.messages import H_BOOKING_ID, H_CORRELATION_ID
from notification.settings import NotificationSettings
from tests.notification.facts import DOMAIN, MAIL_FROM, cancelled, confirmed, created, message_id
from tests.notification.smtpserver import SmtpServer
from tests.streams import BOOKING
from tests.support import eventually, publish, running, stream_count, stream_envelopes

Status = notification_events.NotificationStatus
Kind = notification_events.NotificationKind


@pytest.fixture(autouse=True)
async def booking_stream(js: JetStreamContext) -> None:
    """The stream the booking service would own: notification only consumes it."""
    await ensure_stream(js, BOOKING)


def settings(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, **extra: object
) -> NotificationSettings:
    return NotificationSettings(
        nats_url=nats_server.url,
        database_url=database_url,
        health_port=0,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        smtp_timeout_seconds=2,
        mail_from=MAIL_FROM,
        message_id_domain=DOMAIN,
        max_deliveries=3,
        retry_backoff_seconds=0.05,
        retry_backoff_max_seconds=0.5,
        log_format="text",
        **extra,  # type: ignore[arg-type]
    )


async def sent_facts(js: JetStreamContext) -> list[tuple[Envelope, notification_events.NotificationSent]]:
    return [
        (env, env.decode(notification_events.NotificationSent))
        for env in await stream_envelopes(js, "NOTIFICATION")
    ]


async def at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def test_the_three_kinds_of_email_reach_the_right_recipient(
    nats_server: NatsServer,
    database_url: str,
    smtp: SmtpServer,
    js: JetStreamContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    facts = {
        "b-ok": [created("b-ok", "ann@example.com"), confirmed("b-ok")],
        "b-ko": [created("b-ko", "bob@example.org"), cancelled("b-ko", "card_declined")],
    }
    async with running(build(settings(nats_server, database_url, smtp))):
        for envs in facts.values():
            for env in envs:
                await publish(js, env)
        await eventually(lambda: len(smtp.received) >= 4, message="four emails")
        await eventually(partial(at_least, js, "NOTIFICATION", 4), message="four NotificationSent")
    by_id = {r.message_id: r for r in smtp.received}
    assert len(by_id) == len(smtp.received) == 4
    expected = {
        message_id(facts["b-ok"][0]): (
            "b-ok",
            "ann@example.com",
            "received",
            "We received your booking b-ok",
        ),
        message_id(facts["b-ok"][1]): ("b-ok", "ann@example.com", "confirmed", "is confirmed"),
        message_id(facts["b-ko"][0]): (
            "b-ko",
            "bob@example.org",
            "received",
            "We received your booking b-ko",
        ),
        message_id(facts["b-ko"][1]): ("b-ko", "bob@example.org", "cancelled", "your card was declined"),
    }
    assert set(by_id) == set(expected)
    for mid, (booking, recipient, word, text) in expected.items():
        email = by_id[mid]
        msg = email.message
        assert email.rcpt_tos == (recipient,)
        assert email.mail_from == "bookings@example.com"
        assert (str(msg["To"]), str(msg["From"])) == (recipient, MAIL_FROM)
        assert booking in str(msg["Subject"]) and word in str(msg["Subject"])
        assert (str(msg[H_BOOKING_ID]), str(msg[H_CORRELATION_ID])) == (booking, f"wf-{booking}")
        assert msg.get_content_type() == "multipart/alternative"
        assert text in email.part("plain") and text in email.part("html")
        assert "25.00 EUR" in email.part("plain")
    # One NotificationSent per email, in the workflow of the fact that caused it.
    causes = {env.id: env for envs in facts.values() for env in envs}
    published = await sent_facts(js)
    assert len(published) == 4
    for env, sent in published:
        cause = causes[env.causation_id]
        assert (env.source, env.subject, env.correlation_id) == (
            "notification",
            "notification.sent",
            cause.correlation_id,
        )
        assert sent.status == Status.NOTIFICATION_STATUS_SENT
        assert sent.message_id == message_id(cause)
        assert sent.recipient == expected[sent.message_id][1]
        assert sent.booking_id == expected[sent.message_id][0]
    kinds = sorted(Kind.Name(sent.kind) for _, sent in published)
    assert kinds == [
        "NOTIFICATION_KIND_BOOKING_CANCELLED",
        "NOTIFICATION_KIND_BOOKING_CONFIRMED",
        "NOTIFICATION_KIND_BOOKING_RECEIVED",
        "NOTIFICATION_KIND_BOOKING_RECEIVED",
    ]
    assert await stream_count(js, "DLQ") == 0
    # The service never logs a body (the test's SMTP server, ``mail.log``, is not the service).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail."))
    assert "wf-b-ok" in logged
    assert "your card was declined" not in logged and "25.00 EUR" not in logged


async def test_two_replicas_send_each_email_once_and_in_order(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    smtp.recorder.delay_seconds = 0.01
    envs = []
    for i in range(15):
        envs += [created(f"b-{i}", f"u{i}@example.com"), confirmed(f"b-{i}")]
    cfg = settings(nats_server, database_url, smtp, batch_size=4)
    async with running(build(cfg)), running(build(cfg)):
        for env in envs:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", len(envs)), timeout=30, message="every email")
    ids = smtp.message_ids()
    assert sorted(ids) == sorted(message_id(env) for env in envs)
    for first, then in zip(envs[::2], envs[1::2], strict=True):
        assert ids.index(message_id(first)) < ids.index(message_id(then))
    assert await stream_count(js, "DLQ") == 0


async def test_a_booking_without_email_is_skipped_visibly(
    nats_server: NatsServer,
    database_url: str,
    smtp: SmtpServer,
    js: JetStreamContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="notification")
    envs = [created("b-mute"), cancelled("b-mute", "sold_out"), created("b-loud", "cy@example.com")]
    async with running(build(settings(nats_server, database_url, smtp))):
        for env in envs:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", 3), message="three NotificationSent")
    assert [r.rcpt_tos for r in smtp.received] == [("cy@example.com",)]
    by_cause = {env.causation_id: sent for env, sent in await sent_facts(js)}
    for env in envs[:2]:
        sent = by_cause[env.id]
        assert (sent.status, sent.recipient, sent.booking_id) == (
            Status.NOTIFICATION_STATUS_SKIPPED,
            "",
            "b-mute",
        )
        assert "no email address" in sent.detail
        assert sent.message_id == ""  # no email, no Message-ID
    assert by_cause[envs[2].id].status == Status.NOTIFICATION_STATUS_SENT
    skips = [r.getMessage() for r in caplog.records if "no email address" in r.getMessage()]
    assert len(skips) == 2 and all("wf-b-mute" in line for line in skips)


async def test_smtp_down_then_back_loses_nothing_and_sends_each_email_once(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    smtp.stop()
    envs = []
    for i in range(3):
        envs += [created(f"b-{i}", f"u{i}@example.com"), confirmed(f"b-{i}")]
    async with running(build(settings(nats_server, database_url, smtp))):
        for env in envs:
            await publish(js, env)
        await asyncio.sleep(2)  # several retries against a closed port
        assert await stream_count(js, "NOTIFICATION") == 0
        smtp.start()
        await eventually(partial(at_least, js, "NOTIFICATION", len(envs)), timeout=20, message="every email")
        await asyncio.sleep(0.5)
    ids = smtp.message_ids()
    assert sorted(ids) == sorted(message_id(env) for env in envs)  # each once: no duplicate Message-ID
    for first, then in zip(envs[::2], envs[1::2], strict=True):  # "received" before "confirmed"
        assert ids.index(message_id(first)) < ids.index(message_id(then))
    assert {sent.status for _, sent in await sent_facts(js)} == {Status.NOTIFICATION_STATUS_SENT}
    assert await stream_count(js, "DLQ") == 0


async def test_an_smtp_outage_longer_than_the_retry_window_dead_letters_the_fact(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    smtp.stop()
    late, fresh = created("b-late", "gil@example.com", ago_seconds=30), created("b-fresh", "hal@example.com")
    config = settings(nats_server, database_url, smtp, smtp_retry_seconds=20, max_fact_age_seconds=60)
    async with running(build(config)):
        await publish(js, late)
        await publish(js, fresh)
        await eventually(partial(at_least, js, "DLQ", 1), timeout=15, message="the late fact in the DLQ")
        [parked] = await stream_envelopes(js, "DLQ")
        assert parked.id == late.id
        smtp.start()  # the fresh fact, still inside its window, goes out once the server is back
        await eventually(partial(at_least, js, "NOTIFICATION", 1), timeout=20, message="the fresh email")
    assert smtp.message_ids() == [message_id(fresh)]
    assert await stream_count(js, "DLQ") == 1


async def test_a_slow_first_email_holds_the_outcome_email_without_dead_lettering_it(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    """The outcome fact, on another replica, finds its booking while "received" is still being sent."""
    smtp.recorder.delay_seconds = 1.5  # under the 2 s SMTP timeout, far over 3 deliveries x backoff
    envs = [created("b-slow", "ivy@example.com"), confirmed("b-slow")]
    cfg = settings(nats_server, database_url, smtp)
    async with running(build(cfg)), running(build(cfg)):
        for env in envs:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", 2), timeout=30, message="both emails")
    assert smtp.message_ids() == [message_id(env) for env in envs]
    assert await stream_count(js, "DLQ") == 0


async def test_a_permanent_refusal_is_recorded_not_retried_and_the_rest_goes_on(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    smtp.refuse("nobody@example.com")
    bad, good = created("b-bad", "nobody@example.com"), created("b-good", "dee@example.com")
    async with running(build(settings(nats_server, database_url, smtp))):
        await publish(js, bad)
        await publish(js, good)
        await eventually(partial(at_least, js, "NOTIFICATION", 2), message="two NotificationSent")
        await asyncio.sleep(1)  # a retry would come back within this
    assert smtp.recorder.refused["nobody@example.com"] == 1
    assert [r.rcpt_tos for r in smtp.received] == [("dee@example.com",)]
    by_cause = {env.causation_id: sent for env, sent in await sent_facts(js)}
    refused = by_cause[bad.id]
    assert (refused.status, refused.recipient) == (Status.NOTIFICATION_STATUS_REFUSED, "nobody@example.com")
    assert refused.detail.startswith("550") and "no such user" in refused.detail
    assert refused.message_id == message_id(bad)
    assert by_cause[good.id].status == Status.NOTIFICATION_STATUS_SENT
    assert await stream_count(js, "DLQ") == 0


async def test_a_poison_fact_does_not_block_the_consumer(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    good = created("b-after", "eve@example.com")
    poison = Envelope(
        id="poison-1",
        type=good.type,
        source="booking",
        subject=good.subject,
        data=b"\xff\xff\xff not protobuf",
        correlation_id="wf-poison",
    )
    async with running(build(settings(nats_server, database_url, smtp))):
        await publish(js, poison)
        await publish(js, good)
        await eventually(lambda: len(smtp.received) >= 1, message="the email after the poison")
        await eventually(partial(at_least, js, "DLQ", 1), message="the poison in the DLQ")
    assert smtp.message_ids() == [message_id(good)]


async def test_a_settled_booking_whose_creation_was_never_seen_is_dead_lettered(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    # Waited for (transiently) within the retry window, then dead-lettered.
    config = settings(nats_server, database_url, smtp, smtp_retry_seconds=2, max_fact_age_seconds=60)
    async with running(build(config)):
        await publish(js, confirmed("b-orphan"))
        await eventually(partial(at_least, js, "DLQ", 1), timeout=15, message="the orphan in the DLQ")
    assert smtp.received == []
    assert await stream_count(js, "NOTIFICATION") == 0


async def test_old_facts_are_not_emailed_about(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext
) -> None:
    old = [created("b-old", "fay@example.com", ago_seconds=7200), confirmed("b-old", ago_seconds=7100)]
    config = settings(nats_server, database_url, smtp, max_fact_age_seconds=3600, smtp_retry_seconds=600)
    async with running(build(config)):
        for env in old:
            await publish(js, env)
        await eventually(partial(at_least, js, "NOTIFICATION", 2), message="two NotificationSent")
    assert smtp.received == []
    for _, sent in await sent_facts(js):
        assert sent.status == Status.NOTIFICATION_STATUS_SKIPPED
        assert sent.detail.startswith("too old")
