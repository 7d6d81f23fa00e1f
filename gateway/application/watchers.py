"""In-process change notification: who is waiting for which booking.

WatchBooking and ``?wait=`` register an event for their booking; each commit
of the read model sets the events of the bookings it changed, and hands over
the committed view too, so a woken watcher need not read it back from the
database. Nobody polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gateway.readmodel.model import BookingView


class Watchers:
    """A registry of ``asyncio.Event`` per booking id."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        #: The last committed view of each watched booking.
        self._latest: dict[str, BookingView] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def watch(self, booking_id: str) -> Iterator[asyncio.Event]:
        """An event that is set whenever the booking changes (clear it after each wake-up).

        Register before reading the current state, so no change can slip in between.
        """
        event = asyncio.Event()
        if self._closed:
            event.set()
        waiting = self._events.setdefault(booking_id, set())
        waiting.add(event)
        try:
            yield event
        finally:
            waiting.discard(event)
            if not waiting and self._events.get(booking_id) is waiting:
                del self._events[booking_id]
                self._latest.pop(booking_id, None)

    def latest(self, booking_id: str) -> BookingView | None:
        """The booking as last committed, if it changed while watched."""
        return self._latest.get(booking_id)

    def notify(self, views: Mapping[str, BookingView]) -> None:
        """Wakes the watchers of these bookings, with their committed views."""
        if not self._events:
            return
        for booking_id, view in views.items():
            waiting = self._events.get(booking_id)
            if waiting:
                self._latest[booking_id] = view
                for event in waiting:
                    event.set()

    def close(self) -> None:
        """Wakes every watcher for good (shutdown); they see ``closed`` and finish."""
        self._closed = True
        for waiting in self._events.values():
            for event in waiting:
                event.set()

    def __len__(self) -> int:
        return sum(len(w) for w in self._events.values())
