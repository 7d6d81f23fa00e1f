"""The bounded memory of committed views."""

from __future__ import annotations

from gateway.readmodel.model import BookingView, Status
from gateway.readmodel.recent import RecentViews


def view(booking_id: str, status: Status = Status.PENDING) -> BookingView:
    return BookingView(booking_id=booking_id, status=status)


def test_the_latest_commit_wins_and_the_oldest_change_leaves_first() -> None:
    recent = RecentViews(2)
    recent.committed({"a": view("a"), "b": view("b")})
    recent.committed({"a": view("a", Status.CONFIRMED)})  # a changed last now
    recent.committed({"c": view("c")})
    assert recent.get("b") is None
    assert recent.get("a") == view("a", Status.CONFIRMED)
    assert recent.get("c") == view("c")
    assert len(recent) == 2


def test_capacity_zero_keeps_nothing() -> None:
    recent = RecentViews(0)
    recent.committed({"a": view("a")})
    assert recent.get("a") is None and len(recent) == 0
