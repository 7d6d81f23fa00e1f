"""The gateway calls every part of ``choreo up --demo`` makes: a booking's status, its wait for an outcome.

Shared by the payment cases (``choreoctl.demo``) and the saga's bookings
(``choreoctl.demo_saga``), so both wait for an outcome the same way: with
``WatchBooking``, a server stream, no polling.
"""

from __future__ import annotations

from typing import Any

from choreo.gateway.v1 import gateway_pb2

CONFIRMED = gateway_pb2.BOOKING_STATUS_CONFIRMED
CANCELLED = gateway_pb2.BOOKING_STATUS_CANCELLED
TERMINAL = (CONFIRMED, CANCELLED)
#: Seconds a booking may take to reach its terminal state (plus the simulated provider latency).
OUTCOME_TIMEOUT = 30.0


def status_name(status: int) -> str:
    """``CONFIRMED`` for ``BOOKING_STATUS_CONFIRMED``."""
    value = gateway_pb2.BookingStatus.DESCRIPTOR.values_by_number.get(status)
    return value.name.removeprefix("BOOKING_STATUS_") if value is not None else str(status)


async def watch_until_terminal(stub: Any, booking_id: str) -> gateway_pb2.Booking:
    """The booking's first terminal state, as streamed by ``WatchBooking``."""
    last: gateway_pb2.Booking | None = None
    call = stub.WatchBooking(gateway_pb2.WatchBookingRequest(booking_id=booking_id), timeout=OUTCOME_TIMEOUT)
    async for message in call:
        last = message.booking
        if last.status in TERMINAL:
            call.cancel()
            return last
    raise RuntimeError(f"WatchBooking ended before a terminal state (last: {last})")
