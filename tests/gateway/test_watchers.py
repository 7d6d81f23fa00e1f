"""Watchers get the committed view with the wake-up, so they need not read it back."""

from __future__ import annotations

from gateway.application.watchers import Watchers
from gateway.readmodel.model import BookingView, Status


def view(status: Status) -> BookingView:
    return BookingView(
        booking_id="b1",
        user_id="u1",
        amount_cents=100,
        currency="EUR",
        status=status,
        correlation_id="c1",
        payment_id="",
        cancellation_reason="",
        created_at_us=1,
        updated_at_us=2,
    )


def test_a_watcher_is_woken_with_the_latest_committed_view() -> None:
    watchers = Watchers()
    with watchers.watch("b1") as changed:
        assert watchers.latest("b1") is None
        watchers.notify({"b1": view(Status.PENDING), "other": view(Status.PENDING)})
        watchers.notify({"b1": view(Status.CONFIRMED)})
        assert changed.is_set()
        latest = watchers.latest("b1")
        assert latest is not None and latest.status is Status.CONFIRMED
        assert watchers.latest("other") is None, "views of unwatched bookings are not kept"
    assert watchers.latest("b1") is None, "the view is dropped with its last watcher"
    assert len(watchers) == 0


def test_nobody_watching_keeps_nothing() -> None:
    watchers = Watchers()
    watchers.notify({"b1": view(Status.CONFIRMED)})
    assert watchers.latest("b1") is None
