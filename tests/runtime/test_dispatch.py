"""Dispatch: a fact's ce-type finds its entry, and its body is decoded as that entry's type."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from google.protobuf.message import DecodeError, Message

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.dispatch import Dispatch, UnknownFactType
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events


@dataclass(frozen=True)
class Entry:
    message_type: type[Message]
    name: str


def envelope(message: Message) -> Envelope:
    return Envelope.wrap(message, source="test", subject="x.y", correlation_id="wf-1")


def test_each_type_gets_its_entry_and_its_decoded_body() -> None:
    table = Dispatch([Entry(booking_events.BookingCreated, "a"), Entry(payment_events.PaymentFailed, "b")])
    entry, message = table.decode(envelope(payment_events.PaymentFailed(booking_id="b-1", reason="no")))
    assert entry.name == "b"
    assert isinstance(message, payment_events.PaymentFailed) and message.reason == "no"
    assert "choreo.booking.v1.BookingCreated" in table
    assert [e.name for e in table] == ["a", "b"]


def test_an_unknown_type_and_a_garbled_body_are_told_apart() -> None:
    table = Dispatch([Entry(booking_events.BookingCreated, "a")])
    with pytest.raises(UnknownFactType, match="PaymentFailed"):
        table.decode(envelope(payment_events.PaymentFailed()))
    garbled = dataclasses.replace(
        envelope(booking_events.BookingCreated(booking_id="b-1")), data=b"\xff\xff\xff"
    )
    with pytest.raises(DecodeError):
        table.decode(garbled)


def test_two_entries_for_one_type_are_refused() -> None:
    with pytest.raises(ValueError, match=r"two entries handle choreo\.booking\.v1\.BookingCreated"):
        Dispatch([Entry(booking_events.BookingCreated, "a"), Entry(booking_events.BookingCreated, "b")])
