"""Reading facts off the streams: the trace entry and the booking change of each.

Pure functions of a message's subject, headers, body and stream position, so
the projection's decisions are unit-testable without NATS. The trace needs only
the CloudEvents headers, so a fact of any type (from any service's stream) is
indexed; the types below are the ones the projection reads: most also change a
booking (``InventoryCapacitySet`` names none), and every one is checked against
its contract's subject.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp, rfc3339_us
from choreo.contract import fact_subject, type_name
from choreo.dispatch import Dispatch
from choreo.envelope import Envelope, EnvelopeError
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from gateway.readmodel.model import Change, Status, TraceRecord

#: Longest identifier the read model stores; a fact with a longer one is refused (DLQ).
MAX_ID_LENGTH = 128
#: Longest type, source or subject name.
MAX_NAME_LENGTH = 255
MAX_REASON_LENGTH = 256

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Fact:
    """What the projection does with one message.

    Attributes:
        trace: The trace entry, or ``None`` when the headers do not make it an event.
        change: The booking change, or ``None`` when the fact changes no booking.
        error: Why the message is poison (it is then copied to the DLQ), else ``None``.
    """

    trace: TraceRecord | None
    change: Change | None
    error: str | None = None


def _booking_created(m: booking_events.BookingCreated, at: int, correlation_id: str) -> Change:
    created = from_timestamp(m.created_at) or at
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=created,
        status=Status.PENDING,
        user_id=m.user_id,
        amount_cents=m.amount_cents,
        currency=m.currency,
        created_at_us=created,
        resource_id=m.resource_id,
        quantity=m.quantity,
    )


def _booking_confirmed(m: booking_events.BookingConfirmed, at: int, correlation_id: str) -> Change:
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=from_timestamp(m.confirmed_at) or at,
        status=Status.CONFIRMED,
        payment_id=m.payment_id,
    )


def _booking_cancelled(m: booking_events.BookingCancelled, at: int, correlation_id: str) -> Change:
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=from_timestamp(m.cancelled_at) or at,
        status=Status.CANCELLED,
        cancellation_reason=m.reason,
        reason_is_final=True,
    )


def _payment_succeeded(m: payment_events.PaymentSucceeded, at: int, correlation_id: str) -> Change:
    # A payment exists only for a booking that exists: at least PENDING.
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=from_timestamp(m.succeeded_at) or at,
        status=Status.PENDING,
        payment_id=m.payment_id,
        amount_cents=m.amount_cents,
        currency=m.currency,
    )


def _payment_failed(m: payment_events.PaymentFailed, at: int, correlation_id: str) -> Change:
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=from_timestamp(m.failed_at) or at,
        status=Status.PENDING,
        payment_id=m.payment_id,
        cancellation_reason=m.reason,
    )


def _payment_refunded(m: payment_events.PaymentRefunded, at: int, correlation_id: str) -> Change:
    # A refund follows a cancellation; the BookingCancelled says so (the status is at least PENDING).
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=from_timestamp(m.refunded_at) or at,
        status=Status.PENDING,
    )


def _reservation(
    m: inventory_events.InventoryReserved
    | inventory_events.InventoryReservationFailed
    | inventory_events.InventoryReleased,
    at_us: int,
    correlation_id: str,
) -> Change:
    """Inventory's facts about a booking: it exists (at least PENDING), on this resource."""
    return Change(
        booking_id=m.booking_id,
        correlation_id=correlation_id,
        at_us=at_us,
        status=Status.PENDING,
        resource_id=m.resource_id,
        quantity=m.quantity,
    )


def _inventory_reserved(m: inventory_events.InventoryReserved, at: int, correlation_id: str) -> Change:
    return _reservation(m, from_timestamp(m.reserved_at) or at, correlation_id)


def _reservation_failed(
    m: inventory_events.InventoryReservationFailed, at: int, correlation_id: str
) -> Change:
    # The booking's BookingCancelled (reason sold_out) cancels it; this fact only places it.
    return _reservation(m, from_timestamp(m.failed_at) or at, correlation_id)


def _inventory_released(m: inventory_events.InventoryReleased, at: int, correlation_id: str) -> Change:
    return _reservation(m, from_timestamp(m.released_at) or at, correlation_id)


def _no_booking(_m: Message, _at: int, _correlation_id: str) -> None:
    """A fact of a known contract that is about no booking (indexed for its trace only)."""
    return None


@dataclass(frozen=True, slots=True)
class Reader(Generic[M]):
    """How a fact of one type changes a booking: ``read(fact, at_us, correlation_id)``.

    ``read`` returns ``None`` for a fact that names no booking.
    """

    message_type: type[M]
    read: Callable[[M, int, str], Change | None]


#: The fact types the projection reads, by ``ce-type`` (the runtime's one typed dispatch).
READERS: Dispatch[Reader[Any]] = Dispatch(
    [
        Reader(booking_events.BookingCreated, _booking_created),
        Reader(booking_events.BookingConfirmed, _booking_confirmed),
        Reader(booking_events.BookingCancelled, _booking_cancelled),
        Reader(payment_events.PaymentSucceeded, _payment_succeeded),
        Reader(payment_events.PaymentFailed, _payment_failed),
        Reader(payment_events.PaymentRefunded, _payment_refunded),
        Reader(inventory_events.InventoryReserved, _inventory_reserved),
        Reader(inventory_events.InventoryReservationFailed, _reservation_failed),
        Reader(inventory_events.InventoryReleased, _inventory_released),
        Reader(inventory_events.InventoryCapacitySet, _no_booking),
    ]
)


#: The packages whose facts the projection understands, and the type on each of their subjects.
KNOWN_PACKAGES = frozenset(type_name(r.message_type).rsplit(".", 1)[0] for r in READERS)
SUBJECT_TYPES = {fact_subject(r.message_type): type_name(r.message_type) for r in READERS}
#: The subject each type the projection reads travels on (its contract's option).
TYPE_SUBJECTS = {type_name: subject for subject, type_name in SUBJECT_TYPES.items()}


def _unknown_type(env: Envelope) -> str | None:
    """Why a fact's type is unknown, or ``None``.

    Facts of the booking, payment and inventory contracts must be types the projection
    reads, on their own subject. Facts of other services (streams added by
    configuration) are indexed for the trace only: they are not errors. A type
    the projection reads anywhere but on its own subject is refused: another
    service's user, allowed to publish on its own stream only, must not be able
    to move a booking by sending a ``BookingConfirmed`` there.
    """
    expected = SUBJECT_TYPES.get(env.subject)
    if expected is not None and env.type != expected:
        return f"unknown type {env.type!r} on subject {env.subject} (expected {expected})"
    own = TYPE_SUBJECTS.get(env.type)
    if own is not None and env.subject != own:
        return f"{env.type} on subject {env.subject}: its contract's subject is {own}"
    if env.type not in READERS and env.type.rsplit(".", 1)[0] in KNOWN_PACKAGES:
        return f"unknown type {env.type!r}"
    return None


def _too_long(env: Envelope) -> str | None:
    for name, value, limit in (
        ("ce-id", env.id, MAX_ID_LENGTH),
        ("ce-correlationid", env.correlation_id, MAX_ID_LENGTH),
        ("ce-causationid", env.causation_id, MAX_ID_LENGTH),
        ("ce-type", env.type, MAX_NAME_LENGTH),
        ("ce-source", env.source, MAX_NAME_LENGTH),
        ("subject", env.subject, MAX_NAME_LENGTH),
    ):
        if len(value) > limit:
            return f"{name} is longer than {limit} characters"
    return None


def _check_change(change: Change) -> str | None:
    if not change.booking_id:
        return "booking_id is empty"
    if change.quantity < 0:
        return "quantity is negative"
    for name, value, limit in (
        ("booking_id", change.booking_id, MAX_ID_LENGTH),
        ("user_id", change.user_id, MAX_ID_LENGTH),
        ("payment_id", change.payment_id, MAX_ID_LENGTH),
        ("currency", change.currency, 8),
        ("cancellation_reason", change.cancellation_reason, MAX_REASON_LENGTH),
        ("resource_id", change.resource_id, MAX_ID_LENGTH),
    ):
        if len(value) > limit:
            return f"{name} is longer than {limit} characters"
    return None


def read_fact(
    *,
    stream: str,
    sequence: int,
    subject: str,
    headers: dict[str, str] | None,
    data: bytes,
    stored_at_us: int,
) -> Fact:
    """Reads one message of ``stream`` at ``sequence``.

    Args:
        stream: The stream it was read from.
        sequence: Its stream sequence.
        subject: Its subject.
        headers: Its NATS headers (the CloudEvents attributes).
        data: The protobuf body.
        stored_at_us: When JetStream stored it (used when ``ce-time`` is missing).
    """
    try:
        env = Envelope.from_headers(subject, headers, data)
    except EnvelopeError as exc:
        return Fact(None, None, f"not an event: {exc}")
    problem = _too_long(env)
    if problem:
        return Fact(None, None, f"not indexable: {problem}")
    at = rfc3339_us(env.time) or stored_at_us
    change: Change | None = None
    error = _unknown_type(env)
    if error is None and env.type in READERS:
        try:
            reader, message = READERS.decode(env)
            change = reader.read(message, at, env.correlation_id)
        except DecodeError as exc:
            error = f"undecodable {env.type}: {exc}"
        else:
            error = _check_change(change) if change is not None else None
            if error is not None:
                error, change = f"invalid {env.type}: {error}", None
    trace = TraceRecord(
        event_id=env.id,
        correlation_id=env.correlation_id,
        booking_id=change.booking_id if change else "",
        event_type=env.type,
        source=env.source,
        subject=subject,
        stream=stream,
        stream_sequence=sequence,
        causation_id=env.causation_id,
        occurred_at_us=at,
    )
    return Fact(trace, change, error)
