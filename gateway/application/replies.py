"""The booking service's command reply as a read-model change.

``CreateBooking`` hands the booking the service just committed straight to the
read model, so the caller reads its own write before the ``BookingCreated``
fact has come round through the projection. The reply is the service's own
state, so its cancellation reason is final, as a ``BookingCancelled``'s is.
"""

from __future__ import annotations

from choreo.booking.v1 import commands_pb2
from choreo.clock import from_timestamp
from gateway.readmodel.model import Change, Status

_FROM_STATE: dict[commands_pb2.BookingState.ValueType, Status] = {
    commands_pb2.BOOKING_STATE_UNSPECIFIED: Status.UNSPECIFIED,
    commands_pb2.BOOKING_STATE_PENDING: Status.PENDING,
    commands_pb2.BOOKING_STATE_CONFIRMED: Status.CONFIRMED,
    commands_pb2.BOOKING_STATE_CANCELLED: Status.CANCELLED,
}


def change_from_record(record: commands_pb2.BookingRecord) -> Change:
    """The booking service's own state, as a read-model change (its reason is final)."""
    updated = from_timestamp(record.updated_at)
    return Change(
        booking_id=record.booking_id,
        at_us=updated,
        status=_FROM_STATE.get(record.state, Status.UNSPECIFIED),
        user_id=record.user_id,
        amount_cents=record.amount_cents,
        currency=record.currency,
        correlation_id=record.correlation_id,
        payment_id=record.payment_id,
        cancellation_reason=record.cancellation_reason,
        reason_is_final=True,
        created_at_us=from_timestamp(record.created_at),
    )
