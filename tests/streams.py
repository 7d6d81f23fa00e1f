"""The streams and subjects the tests use, read from where the system declares them.

The services declare the streams they own (``booking.topology``, ``payment.topology``),
the contract names each fact's subject (``choreo.options.v1``), and the runtime owns
the DLQ. Tests take them from there, so they check the declarations, not a copy.
"""

from __future__ import annotations

from booking.topology import STREAM as BOOKING
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.contract import command_options, fact_subject
from choreo.dlq import DLQ, DLQ_STREAM, dlq_subject
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.topology import Stream
from payment.topology import STREAM as PAYMENT

__all__ = [
    "BOOKING",
    "BOOKING_CANCELLED",
    "BOOKING_CONFIRMED",
    "BOOKING_CREATED",
    "BOOKING_STREAM",
    "CMD_CREATE_BOOKING",
    "DLQ",
    "DLQ_STREAM",
    "PAYMENT",
    "PAYMENT_FAILED",
    "PAYMENT_STREAM",
    "PAYMENT_SUCCEEDED",
    "STREAMS",
    "dlq_subject",
]

BOOKING_STREAM = BOOKING.name
PAYMENT_STREAM = PAYMENT.name
#: Every stream of the reference system, by name.
STREAMS: dict[str, Stream] = {s.name: s for s in (BOOKING, PAYMENT, DLQ)}

BOOKING_CREATED = fact_subject(booking_events.BookingCreated)
BOOKING_CONFIRMED = fact_subject(booking_events.BookingConfirmed)
BOOKING_CANCELLED = fact_subject(booking_events.BookingCancelled)
PAYMENT_SUCCEEDED = fact_subject(payment_events.PaymentSucceeded)
PAYMENT_FAILED = fact_subject(payment_events.PaymentFailed)
CMD_CREATE_BOOKING = command_options(commands_pb2.CreateBookingCommand).subject
