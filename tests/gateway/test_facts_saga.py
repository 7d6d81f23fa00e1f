"""The saga's facts (issue 12): inventory's and PaymentRefunded, read like booking's and payment's."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from choreo.contract import fact_subject, type_name
from choreo.envelope import Envelope
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from gateway.projection.facts import Fact, read_fact
from gateway.readmodel.model import Status
from tests.gateway.fakes import ts

RESERVED = inventory_events.InventoryReserved(
    booking_id="b1", resource_id="room-1", quantity=2, reserved_at=ts(2_000_000)
)
FAILED = inventory_events.InventoryReservationFailed(
    booking_id="b1", resource_id="room-1", quantity=2, reason="sold_out", failed_at=ts(2_000_000), available=1
)
RELEASED = inventory_events.InventoryReleased(
    booking_id="b1", resource_id="room-1", quantity=2, reason="cancelled_by_user", released_at=ts(4_000_000)
)
CAPACITY = inventory_events.InventoryCapacitySet(resource_id="room-1", capacity=10, set_at=ts(1_000_000))
REFUNDED = payment_events.PaymentRefunded(
    refund_id="r1",
    payment_id="p1",
    booking_id="b1",
    amount_cents=4200,
    currency="EUR",
    refunded_at=ts(5_000_000),
    reason="cancelled_by_user",
)


def read(message: Message, *, subject: str = "", source: str = "", stream: str = "") -> Fact:
    subject = subject or fact_subject(type(message))
    env = Envelope.wrap(
        message,
        source=source or subject.split(".", 1)[0],
        subject=subject,
        correlation_id="corr-1",
        causation_id="e0",
    )
    return read_fact(
        stream=stream or subject.split(".", 1)[0].upper(),
        sequence=3,
        subject=subject,
        headers=env.headers(),
        data=env.data,
        stored_at_us=1,
    )


@pytest.mark.parametrize(
    ("message", "at_us"), [(RESERVED, 2_000_000), (FAILED, 2_000_000), (RELEASED, 4_000_000)]
)
def test_inventory_facts_place_the_booking_on_its_resource(message: Message, at_us: int) -> None:
    fact = read(message)
    assert fact.error is None and fact.change is not None and fact.trace is not None
    c = fact.change
    assert (c.booking_id, c.resource_id, c.quantity, c.at_us) == ("b1", "room-1", 2, at_us)
    # They say the booking exists, nothing about how it ends (BookingCancelled does that).
    assert c.status is Status.PENDING and not c.cancellation_reason
    t = fact.trace
    assert (t.event_type, t.stream, t.subject, t.booking_id, t.source) == (
        type_name(type(message)),
        "INVENTORY",
        fact_subject(type(message)),
        "b1",
        "inventory",
    )


def test_a_capacity_change_is_traced_and_changes_no_booking() -> None:
    fact = read(CAPACITY)
    assert fact.error is None and fact.change is None
    assert fact.trace is not None and fact.trace.event_type == "choreo.inventory.v1.InventoryCapacitySet"
    assert fact.trace.booking_id == ""


def test_a_refund_is_traced_and_does_not_move_the_booking() -> None:
    fact = read(REFUNDED)
    assert fact.error is None and fact.change is not None and fact.trace is not None
    assert (fact.change.booking_id, fact.change.status, fact.change.at_us) == (
        "b1",
        Status.PENDING,
        5_000_000,
    )
    assert fact.trace.stream == "PAYMENT" and fact.trace.subject == "payment.refunded"


@pytest.mark.parametrize(
    ("message", "subject", "stream"),
    [
        # Payment may publish on payment.> only: it cannot say inventory released units.
        (RELEASED, "payment.refunded", "PAYMENT"),
        (REFUNDED, "inventory.released", "INVENTORY"),
        (RESERVED, "inventory.released", "INVENTORY"),
        (RESERVED, "notification.sent", "NOTIFICATION"),
        (REFUNDED, "booking.cancelled", "BOOKING"),
    ],
)
def test_a_saga_fact_on_another_subject_is_poison(message: Message, subject: str, stream: str) -> None:
    fact = read(message, subject=subject, stream=stream)
    assert fact.error is not None and fact.change is None
    assert fact.trace is not None  # still in its workflow's trace, as other poison with headers


def test_an_unknown_inventory_type_is_poison() -> None:
    env = Envelope(
        id="e1",
        type="choreo.inventory.v1.InventoryTeleported",
        source="inventory",
        subject="inventory.teleported",
        data=b"",
        correlation_id="corr-1",
    )
    fact = read_fact(
        stream="INVENTORY", sequence=1, subject=env.subject, headers=env.headers(), data=b"", stored_at_us=1
    )
    assert fact.error is not None and "unknown type" in fact.error


def test_a_negative_quantity_or_an_overlong_resource_is_poison() -> None:
    negative = inventory_events.InventoryReserved(booking_id="b1", resource_id="r", quantity=-1)
    assert read(negative).error is not None
    long_resource = inventory_events.InventoryReleased(booking_id="b1", resource_id="r" * 129, quantity=1)
    fact = read(long_resource)
    assert fact.error is not None and "resource_id" in fact.error and fact.change is None
