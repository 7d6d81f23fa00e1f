"""Translations between the read model and the protobuf contracts.

The booking service's ``BookingRecord`` (command reply) becomes a read-model
change; read-model views and trace records become the public ``Booking`` and
``TraceEvent`` messages that both the gRPC and the HTTP API return.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from choreo.booking.v1 import commands_pb2
from choreo.clock import from_timestamp, to_timestamp
from choreo.gateway.v1 import gateway_pb2
from gateway.readmodel.model import BookingView, Change, Status, TraceRecord

_TO_PROTO: dict[Status, gateway_pb2.BookingStatus.ValueType] = {
    Status.UNSPECIFIED: gateway_pb2.BOOKING_STATUS_UNSPECIFIED,
    Status.PENDING: gateway_pb2.BOOKING_STATUS_PENDING,
    Status.CONFIRMED: gateway_pb2.BOOKING_STATUS_CONFIRMED,
    Status.CANCELLED: gateway_pb2.BOOKING_STATUS_CANCELLED,
}
_FROM_PROTO = {v: k for k, v in _TO_PROTO.items()}
_FROM_STATE: dict[commands_pb2.BookingState.ValueType, Status] = {
    commands_pb2.BOOKING_STATE_UNSPECIFIED: Status.UNSPECIFIED,
    commands_pb2.BOOKING_STATE_PENDING: Status.PENDING,
    commands_pb2.BOOKING_STATE_CONFIRMED: Status.CONFIRMED,
    commands_pb2.BOOKING_STATE_CANCELLED: Status.CANCELLED,
}


def timestamp(us: int) -> Timestamp | None:
    """Microseconds since the epoch as a Timestamp; ``None`` for 0 (unknown)."""
    if not us:
        return None
    return to_timestamp(us)


def status_from_proto(value: int) -> Status | None:
    """A ``BookingStatus`` filter: ``None`` for UNSPECIFIED (any status).

    Raises:
        ValueError: not a ``BookingStatus`` value.
    """
    try:
        status = _FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown status {value}") from None
    return None if status is Status.UNSPECIFIED else status


def status_from_name(name: str) -> Status | None:
    """A status filter as written in a URL: ``BOOKING_STATUS_CONFIRMED``, ``CONFIRMED``, or a number.

    Raises:
        ValueError: not a status.
    """
    text = name.strip().upper()
    if not text:
        return None
    if text.isdigit():
        return status_from_proto(int(text))
    short = text.removeprefix("BOOKING_STATUS_")
    try:
        status = Status(short)
    except ValueError:
        raise ValueError(f"unknown status {name!r}") from None
    return None if status is Status.UNSPECIFIED else status


def booking_message(view: BookingView) -> gateway_pb2.Booking:
    """The public ``Booking`` of a read-model view."""
    return gateway_pb2.Booking(
        booking_id=view.booking_id,
        user_id=view.user_id,
        amount_cents=view.amount_cents,
        currency=view.currency,
        status=_TO_PROTO[view.status],
        correlation_id=view.correlation_id,
        payment_id=view.payment_id,
        cancellation_reason=view.cancellation_reason,
        created_at=timestamp(view.created_at_us),
        updated_at=timestamp(view.updated_at_us),
    )


def trace_message(record: TraceRecord) -> gateway_pb2.TraceEvent:
    """The public ``TraceEvent`` of an indexed fact."""
    return gateway_pb2.TraceEvent(
        event_id=record.event_id,
        event_type=record.event_type,
        source=record.source,
        subject=record.subject,
        stream=record.stream,
        stream_sequence=record.stream_sequence,
        causation_id=record.causation_id,
        occurred_at=timestamp(record.occurred_at_us),
    )


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
