"""SIGKILL of ``python -m notification`` mid-run: every booking still gets its emails, and an
email sent twice (killed between the send and the commit) carries the same Message-ID."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.notification.v1 import events_pb2 as notification_events
from choreoctl.stack.natsserver import NatsServer
from tests.notification.facts import DOMAIN, MAIL_FROM, cancelled, confirmed, created, message_id
from tests.notification.smtpserver import SmtpServer
from tests.streams import BOOKING
from tests.support import eventually, publish, stream_count, stream_envelopes

REPO = Path(__file__).resolve().parents[2]
BOOKINGS = 40


def start_notification(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATION_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "NOTIFICATION_NATS_URL": nats_server.url,
        "NOTIFICATION_DATABASE_URL": database_url,
        "NOTIFICATION_HEALTH_PORT": "0",
        "NOTIFICATION_SMTP_HOST": smtp.host,
        "NOTIFICATION_SMTP_PORT": str(smtp.port),
        "NOTIFICATION_SMTP_SECURITY": "none",
        "NOTIFICATION_MAIL_FROM": MAIL_FROM,
        "NOTIFICATION_MESSAGE_ID_DOMAIN": DOMAIN,
        "NOTIFICATION_LOG_FORMAT": "text",
        "NOTIFICATION_BATCH_SIZE": "8",
        "NOTIFICATION_RETRY_BACKOFF_SECONDS": "0.1",
        "NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS": "1",
        "NOTIFICATION_ACK_WAIT_SECONDS": "5",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "notification"], cwd=REPO, env=env, stdout=out, stderr=out
        )


async def test_sigkill_mid_run_loses_no_email_and_resends_only_with_the_same_message_id(
    nats_server: NatsServer, database_url: str, smtp: SmtpServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    smtp.recorder.delay_seconds = 0.02  # the run lasts long enough to be killed in its middle
    envs = []
    for i in range(BOOKINGS):
        envs.append(created(f"b-{i}", f"user{i}@example.com"))
        envs.append(confirmed(f"b-{i}") if i % 2 else cancelled(f"b-{i}", "insufficient_funds"))
    expected = {message_id(env) for env in envs}
    for env in envs:
        await publish(js, env)
    log = tmp_path / "notification.log"
    kills = 0
    for threshold in (len(envs) // 4, len(envs) // 2):
        proc = start_notification(nats_server, database_url, smtp, log)
        try:
            await eventually(partial(_received, smtp, threshold), timeout=60, message=f"{threshold} emails")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
    proc = start_notification(nats_server, database_url, smtp, log)
    try:
        await eventually(
            lambda: set(smtp.message_ids()) >= expected, timeout=90, message="every booking's emails"
        )
        await eventually(partial(_at_least, js, len(envs)), timeout=30, message="a NotificationSent per fact")
        await asyncio.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    ids = smtp.message_ids()
    copies = Counter(ids)
    assert set(ids) == expected, log.read_text()[-3000:]
    # Each extra copy is a resend: the same Message-ID as the first one, never a new one.
    extra = sum(n - 1 for n in copies.values())
    assert len(ids) == len(expected) + extra
    assert kills == 2
    for first, then in zip(envs[::2], envs[1::2], strict=True):  # "received" first, resends aside
        assert ids.index(message_id(first)) < ids.index(message_id(then))
    # Exactly one NotificationSent per fact that called for an email, all of them sent.
    published = [
        env.decode(notification_events.NotificationSent) for env in await stream_envelopes(js, "NOTIFICATION")
    ]
    assert sorted(sent.message_id for sent in published) == sorted(expected)
    assert {sent.status for sent in published} == {
        notification_events.NotificationStatus.NOTIFICATION_STATUS_SENT
    }
    assert await stream_count(js, "DLQ") == 0
    # At most a few resends: those whose send was done and commit was not at each kill.
    assert extra <= 2 * 8 * 4, copies


def _received(smtp: SmtpServer, n: int) -> bool:
    return len(smtp.received) >= n


async def _at_least(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, "NOTIFICATION") >= n
