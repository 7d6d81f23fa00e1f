"""Notification's reactions to a booking's facts: email first (``prepare``), then record and publish.

Each route's ``prepare`` step decides and sends the email before the handler's
transaction, as payment charges before its own: an SMTP server must not hold a
database transaction open. The handler then records the outcome and emits
``NotificationSent`` in one transaction with the inbox record, so a fact is
emailed about at most once in normal operation. A crash between the send and
the commit sends the email again on redelivery, with the same ``Message-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp, rfc3339_us, to_timestamp
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.errors import PermanentError
from choreo.handler import HandlerContext, Route
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.upserts import insert_new
from notification.bookings import (
    Booking,
    BookingNotYetKnown,
    Bookings,
    FirstEmailPending,
    mark_received_in,
    remember_in,
)
from notification.messages import Kind, Letter, compose, is_deliverable, message_id_for
from notification.smtp import Refused, SendResult, SmtpUnavailable
from notification.tables import notifications

log = logging.getLogger(__name__)

#: The durable consumer of booking facts; replicas share it.
DURABLE = "notification"

Status = notification_events.NotificationStatus
SENT = Status.NOTIFICATION_STATUS_SENT
SKIPPED = Status.NOTIFICATION_STATUS_SKIPPED
REFUSED = Status.NOTIFICATION_STATUS_REFUSED

RECORD_ONCE = {dialect: insert_new(notifications, dialect, "fact_id") for dialect in ("sqlite", "postgresql")}


class Sender(Protocol):
    """What sends an email (``notification.smtp.Mailer``)."""

    async def send(self, message: EmailMessage, recipient: str) -> SendResult: ...


class UnsendableFact(PermanentError):
    """A fact no email can be made of (a header value the email format forbids)."""


class SmtpGaveUp(PermanentError):
    """An email still not sendable ``NOTIFICATION_SMTP_RETRY_SECONDS`` after its fact: dead-lettered.

    The fact waits in the DLQ, to be re-driven (``choreo dlq``) once the SMTP server is back.
    """


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the ``prepare`` step did about one fact's email; the handler records and publishes it."""

    booking_id: str
    kind: Kind.ValueType
    status: Status.ValueType
    message_id: str
    recipient: str = ""
    detail: str = ""


def fact_time_us(stamp: Timestamp, env: Envelope) -> int | None:
    """When the fact happened: its own timestamp, else its ``ce-time``; None when it says neither."""
    if stamp.seconds or stamp.nanos:
        return from_timestamp(stamp)
    return rfc3339_us(env.time)


class Notifier:
    """The ``prepare`` steps: decide whether to email, and send.

    Args:
        sender: Sends the emails.
        store: The known bookings (their addresses).
        mail_from: The ``From`` header.
        message_id_domain: The right-hand side of each ``Message-ID``.
        max_fact_age_seconds: Facts older than this are skipped; 0: no limit.
        first_email_wait_seconds: Longest a later email of a booking waits, in this process,
            for its first email being sent (then it is retried with backoff).
        retry_seconds: How long after its fact an email is retried while the SMTP server
            cannot take it, or while its booking's ``BookingCreated`` is unknown; then
            ``SmtpGaveUp`` (dead-lettered). 0: no limit. A later email waiting for its booking's
            first one waits until the age limit: re-driving the first one lets it go.
    """

    def __init__(
        self,
        sender: Sender,
        store: Bookings,
        *,
        mail_from: str,
        message_id_domain: str,
        max_fact_age_seconds: float,
        first_email_wait_seconds: float = 30.0,
        retry_seconds: float = 0.0,
    ) -> None:
        self._sender = sender
        self.store = store
        self._from = mail_from
        self._domain = message_id_domain
        self._max_age_us = int(max_fact_age_seconds * 1_000_000)
        self._wait_seconds = first_email_wait_seconds
        self._retry_us = int(retry_seconds * 1_000_000)
        self._first_emails: dict[str, asyncio.Event] = {}

    async def received(self, event: booking_events.BookingCreated, env: Envelope) -> Outcome:
        """The "we received your booking" email (the booking is remembered first)."""
        # Registered before the first await: a later fact of the booking handled at the same
        # time (same batch) waits for this email instead of racing it.
        done = self._first_emails.setdefault(event.booking_id, asyncio.Event())
        try:
            at = fact_time_us(event.created_at, env)
            created_at_us = at if at is not None else now_us()
            booking = Booking(
                event.booking_id, event.email, event.user_id, event.amount_cents, event.currency
            )
            # Known before the send, to every replica: the booking's later emails wait for this
            # one (transiently) while it is sent, or retried while the SMTP server is down.
            await self.store.remember(event, created_at_us, first_email_handled=False)
            kind = Kind.NOTIFICATION_KIND_BOOKING_RECEIVED
            outcome = self._too_old(event.booking_id, kind, env, at) or await self._email(
                booking, kind, env, at
            )
            # After the send, off the path to the SMTP server: the later emails may go.
            await self.store.remember(event, created_at_us, first_email_handled=True)
            return outcome
        finally:
            done.set()
            if self._first_emails.get(event.booking_id) is done:
                del self._first_emails[event.booking_id]

    async def confirmed(self, event: booking_events.BookingConfirmed, env: Envelope) -> Outcome:
        """The "your booking is confirmed" email."""
        at = fact_time_us(event.confirmed_at, env)
        return await self._later(event.booking_id, Kind.NOTIFICATION_KIND_BOOKING_CONFIRMED, env, at)

    async def cancelled(self, event: booking_events.BookingCancelled, env: Envelope) -> Outcome:
        """The "your booking was cancelled" email, with the reason in words."""
        at = fact_time_us(event.cancelled_at, env)
        kind = Kind.NOTIFICATION_KIND_BOOKING_CANCELLED
        return await self._later(event.booking_id, kind, env, at, reason=event.reason)

    async def _later(
        self, booking_id: str, kind: Kind.ValueType, env: Envelope, at: int | None, *, reason: str = ""
    ) -> Outcome:
        too_old = self._too_old(booking_id, kind, env, at)
        if too_old is not None:  # decided before the lookup: history needs no BookingCreated
            return too_old
        sending = self._first_emails.get(booking_id)
        if sending is not None:  # its first email is being sent by this process: after it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sending.wait(), self._wait_seconds)
        try:
            booking = await self.store.find(booking_id)
        except BookingNotYetKnown as unknown:  # retried within the window, then the DLQ
            self._give_up_if_late(booking_id, at, unknown)
            raise
        if not booking.received_handled:  # waits for it, until the age limit at the most
            raise FirstEmailPending(f"booking {booking_id}: its first email is not handled yet")
        return await self._email(booking, kind, env, at, reason=reason)

    def _give_up_if_late(self, booking_id: str, at: int | None, cause: Exception) -> None:
        """Raises ``SmtpGaveUp`` when the fact is older than the retry window (the cause otherwise stands)."""
        if not self._retry_us or at is None:
            return
        age_us = time.time_ns() // 1000 - at
        if age_us > self._retry_us:
            raise SmtpGaveUp(
                f"booking {booking_id}: still not sent {age_us // 1_000_000}s after its fact, past "
                f"NOTIFICATION_SMTP_RETRY_SECONDS ({self._retry_us // 1_000_000}s): {cause}; "
                "re-drive it with `choreo dlq` once the SMTP server takes mail"
            ) from cause

    def _too_old(
        self, booking_id: str, kind: Kind.ValueType, env: Envelope, at: int | None
    ) -> Outcome | None:
        if not self._max_age_us or at is None:
            return None
        age_us = time.time_ns() // 1000 - at
        if age_us <= self._max_age_us:
            return None
        detail = f"too old: the fact is {age_us // 1_000_000}s old, past {self._max_age_us // 1_000_000}s"
        log.info(
            "booking %s: no %s email, %s (correlation %s)",
            booking_id,
            Kind.Name(kind),
            detail,
            env.correlation_id,
        )
        return Outcome(booking_id, kind, SKIPPED, "", detail=detail)  # no email, no Message-ID

    async def _email(
        self, booking: Booking, kind: Kind.ValueType, env: Envelope, at: int | None, *, reason: str = ""
    ) -> Outcome:
        """The booking's email of ``kind`` (the caller has checked the fact's age)."""
        message_id = message_id_for(env.id, self._domain)
        if not booking.email:
            log.info(
                "booking %s has no email address: %s email skipped (correlation %s)",
                booking.booking_id,
                Kind.Name(kind),
                env.correlation_id,
            )
            return Outcome(booking.booking_id, kind, SKIPPED, "", detail="the booking has no email address")
        if not is_deliverable(booking.email):
            log.warning(
                "booking %s: its email address is not one to send to: %s email skipped (correlation %s)",
                booking.booking_id,
                Kind.Name(kind),
                env.correlation_id,
            )
            detail = "the booking's email address is malformed"
            return Outcome(booking.booking_id, kind, SKIPPED, "", detail=detail)
        letter = Letter(
            kind, booking.booking_id, booking.email, booking.amount_cents, booking.currency, reason
        )
        try:
            message = compose(
                letter, sender=self._from, message_id=message_id, correlation_id=env.correlation_id
            )
        except ValueError as exc:  # a line break in a header value, a malformed address
            raise UnsendableFact(f"booking {booking.booking_id}: no email can be made of it: {exc}") from None
        try:
            result = await self._sender.send(message, booking.email)
        except SmtpUnavailable as exc:
            self._give_up_if_late(booking.booking_id, at, exc)
            raise
        if isinstance(result, Refused):
            log.warning(
                "booking %s: the SMTP server refused the %s email for good: %s (correlation %s)",
                booking.booking_id,
                Kind.Name(kind),
                result.reply,
                env.correlation_id,
            )
            return Outcome(booking.booking_id, kind, REFUSED, message_id, booking.email, result.reply)
        log.info(
            "booking %s: %s email sent as %s (correlation %s)",
            booking.booking_id,
            Kind.Name(kind),
            message_id,
            env.correlation_id,
        )
        return Outcome(booking.booking_id, kind, SENT, message_id, booking.email)


async def record_received(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
    """Remembers the booking (if its ``prepare`` step did not) and records its first email."""
    at = fact_time_us(event.created_at, ctx.envelope)
    await remember_in(ctx.conn, event, at if at is not None else now_us())
    await mark_received_in(ctx.conn, event.booking_id)
    await record(ctx)


async def record_later(
    _event: booking_events.BookingConfirmed | booking_events.BookingCancelled, ctx: HandlerContext
) -> None:
    """Records a settled booking's email."""
    await record(ctx)


async def record(ctx: HandlerContext) -> None:
    """Records what became of the fact's email and publishes ``NotificationSent``."""
    outcome: Outcome = ctx.prepared
    now = now_us()
    inserted = await ctx.conn.execute(
        RECORD_ONCE[ctx.conn.dialect.name],
        {
            "fact_id": ctx.envelope.id,
            "booking_id": outcome.booking_id,
            "kind": outcome.kind,
            "status": outcome.status,
            "recipient": outcome.recipient,
            "message_id": outcome.message_id,
            "detail": outcome.detail[:500],
            "correlation_id": ctx.envelope.correlation_id,
            "handled_at_us": now,
        },
    )
    if inserted.rowcount == 0:  # recorded already (the inbox lost it): said once is enough
        return
    ctx.emit(
        notification_events.NotificationSent(
            booking_id=outcome.booking_id,
            kind=outcome.kind,
            recipient=outcome.recipient,
            message_id=outcome.message_id,
            status=outcome.status,
            detail=outcome.detail,
            handled_at=to_timestamp(now),
        )
    )


def routes(notifier: Notifier) -> list[Route[Any]]:
    """The notification service's routes, bound to its SMTP sender and bookings store."""
    emits = (notification_events.NotificationSent,)
    return [
        Route(booking_events.BookingCreated, record_received, emits=emits, prepare=notifier.received),
        Route(booking_events.BookingConfirmed, record_later, emits=emits, prepare=notifier.confirmed),
        Route(booking_events.BookingCancelled, record_later, emits=emits, prepare=notifier.cancelled),
    ]
