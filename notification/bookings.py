"""What notification knows of each booking, from its ``BookingCreated`` (``notification_bookings``).

``BookingConfirmed`` and ``BookingCancelled`` carry no email address: the address (and
the amount the emails mention) is remembered when ``BookingCreated`` is handled. Once
its first email is handled (sent, skipped or refused) the booking is marked so, and
only then are its later emails sent: the user reads "received" before "confirmed".
The booking is remembered unmarked before its first email is sent, so its later emails,
on any replica, find it and wait while it is sent or retried, instead of counting failures. The
routes' ``prepare`` steps use this store; it is bound to the service's database once the
runtime has opened it (``attach``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.errors import TransientError
from choreo.upserts import insert_new
from notification.tables import bookings

# Built once: a statement per fact (and its cache key) costs more than running it.
REMEMBER_ONCE = {dialect: insert_new(bookings, dialect, "booking_id") for dialect in ("sqlite", "postgresql")}
_BOOKING = select(bookings).where(bookings.c.booking_id == bindparam("b_id"))
_RECEIVED_HANDLED = (
    update(bookings).where(bookings.c.booking_id == bindparam("b_id")).values(received_handled=True)
)


@dataclass(frozen=True, slots=True)
class Booking:
    """A booking as its ``BookingCreated`` described it."""

    booking_id: str
    email: str
    user_id: str
    amount_cents: int
    currency: str
    #: Its first email ("we received your booking") is handled.
    received_handled: bool = False


class BookingNotYetKnown(TransientError):
    """A fact about a booking whose ``BookingCreated`` was not seen yet.

    Transient: retried with backoff while the ``BookingCreated`` ahead of it is handled
    (by this replica or another), and dead-lettered once the retry window
    (``NOTIFICATION_SMTP_RETRY_SECONDS``) has passed since the fact, if it never comes.
    """


class FirstEmailPending(TransientError):
    """The booking's "received" email is not handled yet (the SMTP server is down, say).

    Transient: the later email waits, with backoff, for as long as the first one does,
    so that the user reads them in order; the age limit ends the wait.
    """


class Bookings:
    """The store of known bookings, on the service's database once ``attach``-ed."""

    def __init__(self, engine: AsyncEngine | None = None) -> None:
        self._engine = engine

    def attach(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the bookings store is not attached to a database yet")
        return self._engine

    async def remember(
        self, event: booking_events.BookingCreated, created_at_us: int, *, first_email_handled: bool
    ) -> None:
        """Records the booking of ``event`` unless it is known, and whether its first email is handled."""
        async with self.engine.begin() as conn:
            await remember_in(conn, event, created_at_us)
            if first_email_handled:
                await mark_received_in(conn, event.booking_id)

    async def find(self, booking_id: str) -> Booking:
        """The booking, as its ``BookingCreated`` described it.

        Raises:
            BookingNotYetKnown: Its ``BookingCreated`` was not seen yet.
        """
        async with self.engine.connect() as conn:
            row = (await conn.execute(_BOOKING, {"b_id": booking_id})).one_or_none()
            await conn.rollback()
        if row is None:
            raise BookingNotYetKnown(f"booking {booking_id}: its BookingCreated was not handled yet")
        return Booking(
            row.booking_id, row.email, row.user_id, row.amount_cents, row.currency, row.received_handled
        )


async def remember_in(
    conn: AsyncConnection, event: booking_events.BookingCreated, created_at_us: int
) -> None:
    """Records the booking of ``event`` in the transaction ``conn`` unless it is known."""
    await conn.execute(
        REMEMBER_ONCE[conn.dialect.name],
        {
            "booking_id": event.booking_id,
            "email": event.email,
            "user_id": event.user_id,
            "amount_cents": event.amount_cents,
            "currency": event.currency,
            "created_at_us": created_at_us,
            "received_handled": False,
        },
    )


async def mark_received_in(conn: AsyncConnection, booking_id: str) -> None:
    """Marks the booking's first email handled, in the transaction ``conn``."""
    await conn.execute(_RECEIVED_HANDLED, {"b_id": booking_id})
