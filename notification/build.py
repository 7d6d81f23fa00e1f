"""Wiring of the notification service."""

from __future__ import annotations

import logging

from choreo.runtime import open_runtime
from choreo.service import Service
from notification.bookings import Bookings
from notification.handlers import Notifier
from notification.migrations import MIGRATIONS
from notification.recovery import RECOVERY
from notification.settings import NotificationSettings
from notification.smtp import Mailer
from notification.topology import topology

log = logging.getLogger(__name__)


async def build(settings: NotificationSettings) -> Service:
    """Assembles the notification service: SMTP sender, booking consumer, outbox relay."""
    smtp = settings.smtp()  # refuses to start without NOTIFICATION_SMTP_HOST, before touching anything
    mailer = Mailer(
        smtp,
        sender=settings.mail_from_address,
        local_hostname=settings.message_domain,
        deadline_seconds=settings.run_timeout_seconds / 2,
    )
    store = Bookings()
    notifier = Notifier(
        mailer,
        store,
        mail_from=settings.mail_from,
        message_id_domain=settings.message_domain,
        max_fact_age_seconds=settings.max_fact_age_seconds,
        first_email_wait_seconds=smtp.timeout_seconds,
        retry_seconds=settings.smtp_retry_seconds,
    )
    declared = topology(notifier)
    rt = await open_runtime(settings, declared, migrations=MIGRATIONS, recovery=RECOVERY)
    store.attach(rt.engine)
    (facts,) = declared.subscriptions
    log.info("emails go through %s as %s", mailer.where, settings.mail_from_address)
    return rt.service([rt.consumer(facts)])
