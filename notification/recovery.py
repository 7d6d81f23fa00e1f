"""How the notification service rebuilds its database from its own stream (``choreo.recovery``).

Each ``NotificationSent`` gives back its ``notifications`` row, and the booking fact
that caused it goes back into the inbox of the ``notification`` consumer: after the
rebuild, a redelivered booking fact is a duplicate, and nobody is emailed twice.

A "received" ``NotificationSent`` also gives back what is known of its booking: its
address (the recipient; empty when none was sent to) and that its first email is
handled. Not its amount, which no notification fact carries: a later email of a
booking rebuilt this way does not mention the amount.
"""

from __future__ import annotations

from choreo.clock import from_timestamp
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.recovery import Recovery, Restore, RestoreContext
from notification.bookings import REMEMBER_ONCE
from notification.handlers import DURABLE, RECORD_ONCE
from notification.messages import Kind
from notification.settings import NotificationSettings
from notification.tables import bookings, notifications
from notification.topology import STREAM

#: The settings ``choreo recover notification`` reads.
SETTINGS = NotificationSettings


async def sent(event: notification_events.NotificationSent, ctx: RestoreContext) -> None:
    """The row the handler wrote with this fact (and the booking, from a first email), if absent."""
    env = ctx.envelope
    if not env.causation_id:
        return  # not emitted by the handler (no cause to record)
    dialect = ctx.conn.dialect.name
    handled_at_us = from_timestamp(event.handled_at)
    await ctx.conn.execute(
        RECORD_ONCE[dialect],
        {
            "fact_id": env.causation_id,
            "booking_id": event.booking_id,
            "kind": event.kind,
            "status": event.status,
            "recipient": event.recipient,
            "message_id": event.message_id,
            "detail": event.detail[:500],
            "correlation_id": env.correlation_id,
            "handled_at_us": handled_at_us,
        },
    )
    if event.kind == Kind.NOTIFICATION_KIND_BOOKING_RECEIVED:
        await ctx.conn.execute(
            REMEMBER_ONCE[dialect],
            {
                "booking_id": event.booking_id,
                "email": event.recipient,
                "user_id": "",
                "amount_cents": 0,
                "currency": "",  # unknown: the later emails leave the amount out
                "created_at_us": handled_at_us,
                "received_handled": True,
            },
        )


RECOVERY = Recovery(
    stream=STREAM.name,
    tables=[bookings, notifications],
    restores=[Restore(notification_events.NotificationSent, sent, handled_by=DURABLE)],
)
