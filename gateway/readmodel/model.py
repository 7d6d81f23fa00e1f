"""The read model's value types: a booking's status and view, a change, a trace record, positions.

One module for the types every layer passes around (the projection produces
``Change`` and ``TraceRecord``, the store keeps ``BookingView`` and
``TraceRecord`` rows, the application pages with ``Cursor`` and
``TraceCursor``), so none of them has to import another's logic to name them.
Plain frozen dataclasses, no behaviour beyond what a status knows of itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """A booking's status as stored in the read model."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Settled: CONFIRMED or CANCELLED (waits and watches end here).

        Only CANCELLED is final: the user may still cancel a CONFIRMED booking.
        """
        return self in (Status.CONFIRMED, Status.CANCELLED)

    @property
    def rank(self) -> int:
        """Position in the one order a booking moves in: UNSPECIFIED, PENDING, CONFIRMED, CANCELLED."""
        return _RANK[self]


_RANK = {Status.UNSPECIFIED: 0, Status.PENDING: 1, Status.CONFIRMED: 2, Status.CANCELLED: 3}


@dataclass(frozen=True, slots=True)
class BookingView:
    """A booking as the read side sees it (one row of ``bookings``)."""

    booking_id: str
    user_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    status: Status = Status.UNSPECIFIED
    correlation_id: str = ""
    payment_id: str = ""
    cancellation_reason: str = ""
    created_at_us: int = 0
    updated_at_us: int = 0
    resource_id: str = ""
    quantity: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True, slots=True)
class Change:
    """What one fact says about a booking; empty fields say nothing.

    Attributes:
        booking_id: The booking the fact is about.
        at_us: When the fact happened.
        status: The status the fact implies (UNSPECIFIED: none).
        reason_is_final: The reason comes from the booking's own cancellation.
    """

    booking_id: str
    at_us: int = 0
    status: Status = Status.UNSPECIFIED
    user_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    correlation_id: str = ""
    payment_id: str = ""
    cancellation_reason: str = ""
    reason_is_final: bool = False
    created_at_us: int = 0
    resource_id: str = ""
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One fact of a workflow, as indexed for traces (a row of ``trace_events``)."""

    event_id: str
    correlation_id: str
    booking_id: str
    event_type: str
    source: str
    subject: str
    stream: str
    stream_sequence: int
    causation_id: str
    occurred_at_us: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last booking of the previous ListBookings page (newest first)."""

    created_at_us: int
    booking_id: str


@dataclass(frozen=True, slots=True)
class TraceCursor:
    """The last fact of the previous trace page, in the store's order of a workflow's facts."""

    occurred_at_us: int
    stream: str
    stream_sequence: int
    event_id: str
