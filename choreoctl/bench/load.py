"""Clients that book through the gateway and follow each booking to its end.

Each client's ``book`` is a ``choreoctl.bench.driver.Op``: create one booking,
then follow it on the gateway's read side until it is CONFIRMED or CANCELLED
(gRPC: ``GetBooking`` with ``wait``; HTTP: ``GET /v1/bookings/{id}?wait=``, the
same long poll). The client
chooses the workflow's correlation id (``x-correlation-id``) and records when
it sent the create, got the reply, and saw the terminal state (``Trip``), so
the stage analysis (``choreoctl.bench.stages``) can place the services' own
timestamps in between.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc

from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from choreoctl.bench.driver import StillPending
from choreoctl.bench.http1 import Http1Client, Response

_TERMINAL = {
    gateway_pb2.BOOKING_STATUS_CONFIRMED: "CONFIRMED",
    gateway_pb2.BOOKING_STATUS_CANCELLED: "CANCELLED",
}
_TERMINAL_JSON = {"BOOKING_STATUS_CONFIRMED": "CONFIRMED", "BOOKING_STATUS_CANCELLED": "CANCELLED"}

#: What every benchmark booking asks for: a card the simulated provider accepts.
BOOKING = {"user_id": "bench", "amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


@dataclass(frozen=True, slots=True)
class Trip:
    """One booking as its client saw it (wall-clock seconds, comparable with the services' clocks).

    Attributes:
        correlation_id: The workflow id the client chose.
        sent: The create request left.
        created: Its reply arrived.
        terminal: The terminal state was seen on the read side.
    """

    correlation_id: str
    sent: float
    created: float
    terminal: float


class CallFailed(Exception):
    """A gRPC call failed; the message names the call and its status (for the report's error samples)."""

    def __init__(self, method: str, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{method} {error.code().name}: {error.details()}")
        self.code = error.code()


class GrpcBookingClient:
    """Books through ``BookingGatewayService`` over a few shared HTTP/2 channels.

    Args:
        target: ``host:port`` of the gateway's gRPC API.
        channels: Channels used round-robin (one channel is one connection).
        follow_timeout: Seconds a booking may stay PENDING before it counts as left pending.
        create_timeout: Deadline of CreateBooking.
        record_trips: Keep a ``Trip`` per booking (for the stage analysis).
    """

    def __init__(
        self,
        target: str,
        *,
        channels: int = 4,
        follow_timeout: float = 30.0,
        create_timeout: float = 10.0,
        record_trips: bool = True,
    ) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel, not shared
        self._channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
        self._stubs = itertools.cycle([gateway_pb2_grpc.BookingGatewayServiceStub(c) for c in self._channels])
        self._request = gateway_pb2.CreateBookingRequest(**BOOKING)  # type: ignore[arg-type]
        self._follow_timeout = follow_timeout
        self._create_timeout = create_timeout
        self._record_trips = record_trips
        self.trips: list[Trip] = []

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    async def book(self) -> str:
        """Creates one booking and follows it; returns its terminal state."""
        stub = next(self._stubs)
        correlation_id = str(uuid.uuid4())
        sent = time.time()
        try:
            response = await stub.CreateBooking(
                self._request, timeout=self._create_timeout, metadata=(("x-correlation-id", correlation_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise CallFailed("CreateBooking", exc) from None
        created = time.time()
        state = _TERMINAL.get(response.booking.status)
        if state is None:
            state = await self._follow(stub, response.booking.booking_id)
        if self._record_trips:
            self.trips.append(Trip(correlation_id, sent, created, time.time()))
        return state

    async def _follow(self, stub: gateway_pb2_grpc.BookingGatewayServiceStub, booking_id: str) -> str:
        # A long poll (one unary call) rather than WatchBooking: the client only wants the
        # outcome, and a unary call costs both sides about half of what a stream does.
        request = gateway_pb2.GetBookingRequest(booking_id=booking_id)
        request.wait.FromTimedelta(timedelta(seconds=self._follow_timeout))
        # grpc's type stubs describe the blocking API; the aio call is awaitable.
        call: Any = stub.GetBooking(request, timeout=self._follow_timeout + 5.0)
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise StillPending(booking_id) from None
            raise CallFailed("GetBooking", exc) from None
        state = _TERMINAL.get(response.booking.status)
        if state is None:
            raise StillPending(booking_id)
        return state


class HttpBookingClient:
    """Books through the gateway's HTTP API: ``POST /v1/bookings``, then ``GET ...?wait=``.

    Uses ``choreoctl.bench.http1`` rather than httpx, whose own CPU cost would be
    the figure measured (see that module).

    Args:
        base_url: The gateway's HTTP base URL.
        connections: Most connections kept open (one per concurrent client is best).
        follow_timeout: Seconds a booking may stay PENDING before it counts as left pending.
    """

    def __init__(self, base_url: str, *, connections: int = 64, follow_timeout: float = 30.0) -> None:
        self._http = Http1Client(base_url, connections=connections, timeout=follow_timeout + 10.0)
        self._follow_timeout = follow_timeout
        self.trips: list[Trip] = []

    async def close(self) -> None:
        await self._http.close()

    async def book(self) -> str:
        """Creates one booking and follows it; returns its terminal state."""
        correlation_id = str(uuid.uuid4())
        sent = time.time()
        response = await self._http.post_json(
            "/v1/bookings", BOOKING, headers={"x-correlation-id": correlation_id}
        )
        _check(response, 201)
        created = time.time()
        booking: dict[str, Any] = response.json()
        state = _TERMINAL_JSON.get(booking["status"])
        if state is None:
            response = await self._http.get(
                f"/v1/bookings/{booking['booking_id']}?wait={self._follow_timeout:g}"
            )
            _check(response, 200)
            state = _TERMINAL_JSON.get(response.json()["status"])
            if state is None:
                raise StillPending(booking["booking_id"])
        self.trips.append(Trip(correlation_id, sent, created, time.time()))
        return state


def _check(response: Response, expected: int) -> None:
    if response.status != expected:
        raise RuntimeError(f"HTTP {response.status}: {response.body[:200]!r}")


async def count_pending(target: str, limit_pages: int = 20) -> int:
    """Bookings the read side still shows PENDING (counted up to ``limit_pages`` pages of 500)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        total, token = 0, ""
        for _ in range(limit_pages):
            page = await stub.ListBookings(
                gateway_pb2.ListBookingsRequest(
                    status=gateway_pb2.BOOKING_STATUS_PENDING, page_size=500, page_token=token
                ),
                timeout=30,
            )
            total += len(page.bookings)
            token = page.next_page_token
            if not token:
                break
        return total


async def settle(target: str, timeout: float = 120.0, poll: float = 0.2) -> dict[str, float | int]:
    """Waits until the read side shows no PENDING booking, so one phase's backlog cannot slow the next.

    Returns:
        ``seconds`` waited and ``pending`` left when the time ran out (0 when settled).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        pending = await count_pending(target, limit_pages=1)
        waited = loop.time() - started
        if pending == 0 or waited >= timeout:
            return {"seconds": round(waited, 3), "pending": pending}
        # The read side changes in another process: asking again is the only way to see it.
        await asyncio.sleep(poll)
