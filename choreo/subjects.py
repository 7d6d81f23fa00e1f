"""Where each fact lives: its subject and stream.

Every publishing service owns one stream named after it, holding its subjects.
Commands travel over core NATS request/reply on ``cmd.<service>.<verb>``; they
are deliberately outside every stream's subjects so JetStream never captures a
request and answers it with a publish acknowledgement.

| stream  | subject             | protobuf type                        |
|---------|---------------------|--------------------------------------|
| BOOKING | booking.created     | choreo.booking.v1.BookingCreated     |
| BOOKING | booking.confirmed   | choreo.booking.v1.BookingConfirmed   |
| BOOKING | booking.cancelled   | choreo.booking.v1.BookingCancelled   |
| PAYMENT | payment.succeeded   | choreo.payment.v1.PaymentSucceeded   |
| PAYMENT | payment.failed      | choreo.payment.v1.PaymentFailed      |
| DLQ     | dlq.<stream>.<consumer> | the original message, unchanged  |
"""

from __future__ import annotations

from google.protobuf.message import Message

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.payment.v1 import events_pb2 as payment_events

BOOKING_STREAM = "BOOKING"
PAYMENT_STREAM = "PAYMENT"
DLQ_STREAM = "DLQ"

#: The subjects each service's stream captures.
STREAM_SUBJECTS: dict[str, list[str]] = {
    BOOKING_STREAM: ["booking.>"],
    PAYMENT_STREAM: ["payment.>"],
    DLQ_STREAM: ["dlq.>"],
}

BOOKING_CREATED = "booking.created"
BOOKING_CONFIRMED = "booking.confirmed"
BOOKING_CANCELLED = "booking.cancelled"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"

CMD_CREATE_BOOKING = "cmd.booking.create"

_SUBJECT_BY_TYPE: dict[str, str] = {
    booking_events.BookingCreated.DESCRIPTOR.full_name: BOOKING_CREATED,
    booking_events.BookingConfirmed.DESCRIPTOR.full_name: BOOKING_CONFIRMED,
    booking_events.BookingCancelled.DESCRIPTOR.full_name: BOOKING_CANCELLED,
    payment_events.PaymentSucceeded.DESCRIPTOR.full_name: PAYMENT_SUCCEEDED,
    payment_events.PaymentFailed.DESCRIPTOR.full_name: PAYMENT_FAILED,
}


def subject_for(message: Message) -> str:
    """The subject a fact of this type is published on."""
    try:
        return _SUBJECT_BY_TYPE[message.DESCRIPTOR.full_name]
    except KeyError:
        raise KeyError(f"no subject is assigned to {message.DESCRIPTOR.full_name}") from None


def dlq_subject(stream: str, consumer: str) -> str:
    return f"dlq.{stream.lower()}.{consumer}"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream subject (``*`` and ``>`` wildcards) captures ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


def stream_of(subject: str) -> str:
    """The stream that captures ``subject`` (``STREAM_SUBJECTS``), or the subject itself when none does."""
    for stream, patterns in STREAM_SUBJECTS.items():
        for pattern in patterns:
            if subject_matches(pattern, subject):
                return stream
    return subject
