"""The committed views of the bookings that changed last, kept in memory.

Nearly every read is of a booking that changed a moment ago: the client that
just created it polls or waits for its outcome, and the projection's next
transaction merges the next fact of the same workflow. Keeping the last
committed views answers both without a database round trip.

The copy is exact because this process is the read model's only writer (a
read model belongs to one gateway, like its stream checkpoints): every commit
updates the views it changed, after it committed. It is bounded, oldest change
out first, so memory stays flat however long the history grows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from gateway.readmodel.model import BookingView


class RecentViews:
    """A bounded map of booking id to its last committed view.

    Args:
        capacity: Views kept (0 keeps none: every read goes to the database).
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._views: OrderedDict[str, BookingView] = OrderedDict()

    def __len__(self) -> int:
        return len(self._views)

    def get(self, booking_id: str) -> BookingView | None:
        return self._views.get(booking_id)

    def committed(self, views: Mapping[str, BookingView]) -> None:
        """Records views that just committed; the oldest changes make room."""
        if self._capacity <= 0:
            return
        for booking_id, view in views.items():
            self._views[booking_id] = view
            self._views.move_to_end(booking_id)
        while len(self._views) > self._capacity:
            self._views.popitem(last=False)

    def clear(self) -> None:
        """Forgets every view (the read model was emptied)."""
        self._views.clear()
