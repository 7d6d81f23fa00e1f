"""Translations between the read model and the public protobuf contracts.

Read-model views and trace records become the public ``Booking`` and
``TraceEvent`` messages that both the gRPC and the HTTP API return, and the
status filters of both APIs become read-model statuses, and times written in a
URL become Timestamps. (The booking
service's command reply becomes a change in ``gateway.application.replies``.)
"""

from __future__ import annotations

import re

from google.protobuf.timestamp_pb2 import Timestamp

from choreo.clock import to_timestamp
from choreo.gateway.v1 import gateway_pb2
from gateway.readmodel.model import BookingView, Status, TraceRecord

_TO_PROTO: dict[Status, gateway_pb2.BookingStatus.ValueType] = {
    Status.UNSPECIFIED: gateway_pb2.BOOKING_STATUS_UNSPECIFIED,
    Status.PENDING: gateway_pb2.BOOKING_STATUS_PENDING,
    Status.CONFIRMED: gateway_pb2.BOOKING_STATUS_CONFIRMED,
    Status.CANCELLED: gateway_pb2.BOOKING_STATUS_CANCELLED,
}
_FROM_PROTO = {v: k for k, v in _TO_PROTO.items()}
#: An RFC 3339 date-time: a full date, ``T``, a full time (fraction up to nanoseconds) and an offset.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)


def timestamp(us: int) -> Timestamp | None:
    """Microseconds since the epoch as a Timestamp; ``None`` for 0 (unknown)."""
    if not us:
        return None
    return to_timestamp(us)


def timestamp_from_rfc3339(text: str) -> Timestamp | None:
    """A time written in RFC 3339 (``2026-01-31T09:00:00Z``, ``...+02:00``); ``None`` for "".

    A space where the offset's sign should be is read as ``+``: an unencoded ``+`` in a
    URL's query is decoded as a space.

    Raises:
        ValueError: not an RFC 3339 date-time with an offset, or not a real time.
    """
    if not text:
        return None
    normal = text.upper()
    if len(normal) > 6 and normal[-6] == " ":
        normal = f"{normal[:-6]}+{normal[-5:]}"
    if not _RFC3339.fullmatch(normal):
        raise ValueError("must be an RFC 3339 time with an offset, like 2026-01-31T09:00:00Z")
    value = Timestamp()
    try:
        value.FromJsonString(normal)
    except ValueError:
        raise ValueError("is not a valid time (RFC 3339)") from None
    return value


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
        resource_id=view.resource_id,
        quantity=view.quantity,
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
