"""The projection's merge: the same facts give the same booking, in any order."""

from __future__ import annotations

import dataclasses
import itertools

from choreo.booking.v1 import commands_pb2
from gateway.application.replies import change_from_record
from gateway.readmodel.merge import conflicting, merge, merge_reason, merge_status
from gateway.readmodel.model import BookingView, Change, Status
from tests.gateway.fakes import ts

CREATED = Change(
    booking_id="b1",
    at_us=1_000,
    status=Status.PENDING,
    user_id="u1",
    amount_cents=4200,
    currency="EUR",
    correlation_id="c1",
    created_at_us=1_000,
)
PAID = Change(booking_id="b1", at_us=2_000, status=Status.PENDING, payment_id="pay_1", correlation_id="c1")
CONFIRMED = Change(
    booking_id="b1", at_us=3_000, status=Status.CONFIRMED, payment_id="pay_1", correlation_id="c1"
)
FAILED = Change(
    booking_id="b1",
    at_us=2_000,
    status=Status.PENDING,
    payment_id="pay_2",
    cancellation_reason="card_declined",
)
CANCELLED = Change(
    booking_id="b1",
    at_us=3_000,
    status=Status.CANCELLED,
    cancellation_reason="payment_declined",
    reason_is_final=True,
)


def fold(changes: tuple[Change, ...] | list[Change]) -> BookingView:
    view: BookingView | None = None
    for change in changes:
        view = merge(view, change)
    assert view is not None
    return view


def test_success_facts_in_any_order_give_the_same_confirmed_booking() -> None:
    results = {fold(order) for order in itertools.permutations([CREATED, PAID, CONFIRMED])}
    assert results == {
        BookingView(
            booking_id="b1",
            user_id="u1",
            amount_cents=4200,
            currency="EUR",
            status=Status.CONFIRMED,
            correlation_id="c1",
            payment_id="pay_1",
            created_at_us=1_000,
            updated_at_us=3_000,
        )
    }


def test_failure_facts_in_any_order_keep_the_bookings_own_reason() -> None:
    results = {fold(order) for order in itertools.permutations([CREATED, FAILED, CANCELLED])}
    assert len(results) == 1
    (view,) = results
    assert view.status is Status.CANCELLED
    assert view.cancellation_reason == "payment_declined"
    assert view.payment_id == "pay_2"
    assert view.user_id == "u1" and view.created_at_us == 1_000 and view.updated_at_us == 3_000


def test_payment_failure_fills_the_reason_until_the_cancellation_arrives() -> None:
    view = fold([CREATED, FAILED])
    assert view.status is Status.PENDING
    assert view.cancellation_reason == "card_declined"


def test_terminal_status_never_goes_back() -> None:
    assert fold([CONFIRMED, CREATED]).status is Status.CONFIRMED
    assert fold([CANCELLED, PAID, CREATED]).status is Status.CANCELLED
    assert merge_status(Status.CONFIRMED, Status.PENDING) is Status.CONFIRMED
    assert merge_status(Status.UNSPECIFIED, Status.PENDING) is Status.PENDING
    assert merge_status(Status.PENDING, Status.UNSPECIFIED) is Status.PENDING


def test_a_payment_fact_first_makes_the_booking_pending() -> None:
    view = merge(None, PAID)
    assert view.status is Status.PENDING and view.payment_id == "pay_1" and view.user_id == ""


def test_applying_a_fact_again_changes_nothing() -> None:
    once = fold([CREATED, PAID, CONFIRMED])
    assert merge(once, PAID) == once
    assert merge(once, CONFIRMED) == once
    assert merge(once, CREATED) == once


def test_reason_rules() -> None:
    assert merge_reason("", "card_declined", final=False) == "card_declined"
    assert merge_reason("declined", "card_declined", final=False) == "declined"
    assert merge_reason("card_declined", "declined", final=True) == "declined"
    assert merge_reason("kept", "", final=True) == "kept"


def test_conflicting_terminal_facts_are_detected_and_cancelled_wins() -> None:
    confirmed = fold([CREATED, CONFIRMED])
    assert conflicting(confirmed, CANCELLED)  # a declined payment's cancellation of a confirmed booking
    assert conflicting(fold([CREATED, CANCELLED]), CONFIRMED)
    assert not conflicting(confirmed, CONFIRMED)
    assert not conflicting(None, CANCELLED)
    # Whatever the order, the result is the same: the later status in the booking's order.
    assert merge(confirmed, CANCELLED).status is Status.CANCELLED
    assert merge(fold([CREATED, CANCELLED]), CONFIRMED).status is Status.CANCELLED


RESERVED = Change(
    booking_id="b1", at_us=1_500, status=Status.PENDING, resource_id="room-1", quantity=2, correlation_id="c1"
)
USER_CANCELLED = Change(
    booking_id="b1",
    at_us=5_000,
    status=Status.CANCELLED,
    cancellation_reason="cancelled_by_user",
    reason_is_final=True,
    correlation_id="c1",
)
RELEASED = Change(
    booking_id="b1", at_us=6_000, status=Status.PENDING, resource_id="room-1", quantity=2, correlation_id="c1"
)
REFUNDED = Change(booking_id="b1", at_us=6_500, status=Status.PENDING, correlation_id="c1")


def test_a_confirmed_booking_cancelled_by_its_user_is_cancelled_in_any_order() -> None:
    created = dataclasses.replace(CREATED, resource_id="room-1", quantity=2)
    facts = [created, RESERVED, PAID, CONFIRMED, USER_CANCELLED, RELEASED, REFUNDED]
    results = {fold(order) for order in itertools.permutations(facts)}
    assert results == {
        BookingView(
            booking_id="b1",
            user_id="u1",
            amount_cents=4200,
            currency="EUR",
            status=Status.CANCELLED,
            correlation_id="c1",
            payment_id="pay_1",
            cancellation_reason="cancelled_by_user",
            created_at_us=1_000,
            updated_at_us=6_500,
            resource_id="room-1",
            quantity=2,
        )
    }
    # CONFIRMED -> CANCELLED by the user is a transition of the booking service, not a conflict.
    confirmed = fold([created, CONFIRMED])
    assert merge_status(Status.CONFIRMED, Status.CANCELLED) is Status.CANCELLED
    assert not conflicting(confirmed, USER_CANCELLED)
    cancelled = fold([created, USER_CANCELLED])
    assert not conflicting(cancelled, CONFIRMED)
    # A BookingConfirmed seen after its BookingCancelled does not un-cancel it.
    assert merge(cancelled, CONFIRMED).status is Status.CANCELLED
    assert merge_status(Status.CANCELLED, Status.CONFIRMED) is Status.CANCELLED


def test_the_cancel_reply_is_not_regressed_by_older_facts() -> None:
    record = commands_pb2.BookingRecord(
        booking_id="b1",
        user_id="u1",
        amount_cents=4200,
        currency="EUR",
        state=commands_pb2.BOOKING_STATE_CANCELLED,
        correlation_id="c1",
        payment_id="pay_1",
        cancellation_reason="cancelled_by_user",
        created_at=ts(1_000),
        updated_at=ts(5_000),
        resource_id="room-1",
        quantity=2,
    )
    reply = change_from_record(record)
    assert reply.resource_id == "room-1" and reply.quantity == 2
    view = fold([reply, CREATED, RESERVED, PAID, CONFIRMED])
    assert view.status is Status.CANCELLED and view.cancellation_reason == "cancelled_by_user"
    assert (view.resource_id, view.quantity, view.updated_at_us) == ("room-1", 2, 5_000)


def test_the_command_reply_merges_like_a_fact() -> None:
    record = commands_pb2.BookingRecord(
        booking_id="b1",
        user_id="u1",
        amount_cents=4200,
        currency="EUR",
        state=commands_pb2.BOOKING_STATE_PENDING,
        correlation_id="c1",
        created_at=ts(1_000),
        updated_at=ts(1_000),
    )
    reply = change_from_record(record)
    assert reply.status is Status.PENDING and reply.created_at_us == 1_000
    results = {fold(order) for order in itertools.permutations([reply, CREATED, PAID, CONFIRMED])}
    assert len(results) == 1
    assert fold([CREATED, PAID, CONFIRMED]) in results
