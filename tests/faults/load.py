"""A bounded load: N bookings over gRPC, each with its idempotency key, retried on UNAVAILABLE.

The client is a well-behaved one: every booking has its own idempotency key and
is retried with the same key (``tests.e2e.client.create_with_retry``) while the
gateway or booking is down, so each accepted booking exists once. Tokens cycle
through every outcome (``tests.e2e.client.EXPECTED``), and each booking has
its own amount, so the ledger's sums tell one booking from another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from choreo.gateway.v1 import gateway_pb2_grpc
from tests.e2e.client import EXPECTED, create_with_retry, request

TOKENS = list(EXPECTED)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A booking the gateway accepted."""

    index: int
    booking_id: str
    token: str
    amount_cents: int


@dataclass
class Load:
    """N bookings by ``concurrency`` clients.

    Attributes:
        total: Bookings to create.
        user: The user id of every booking (the scenario's own).
        concurrency: Clients creating at once.
        create_deadline: Longest one booking may be retried before the load fails.
        accepted: The bookings accepted so far, by index.
        retries: The cause of every retry (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``).
        refused: Bookings never accepted, by index: the last error (a well-behaved client
            retries only UNAVAILABLE and DEADLINE_EXCEEDED, within ``create_deadline``).
    """

    total: int
    user: str
    concurrency: int = 8
    create_deadline: float = 40.0
    accepted: dict[int, Accepted] = field(default_factory=dict)
    retries: list[str] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    _waiters: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def token(self, index: int) -> str:
        return TOKENS[index % len(TOKENS)]

    def amount(self, index: int) -> int:
        return 1000 + index

    def key(self, index: int) -> str:
        return f"{self.user}-{index}"

    @property
    def answered(self) -> int:
        """Creates done with: accepted or refused."""
        return len(self.accepted) + len(self.refused)

    async def reached(self, count: int) -> None:
        """Returns once ``count`` creates have been answered (accepted or refused)."""
        if self.answered >= count:
            return
        event = asyncio.Event()
        self._waiters.append((count, event))
        await event.wait()

    async def run(self, target: str, indexes: range | None = None) -> None:
        """Creates the bookings (all, or those of ``indexes``); see ``refused`` for those that were not."""
        todo = list(indexes if indexes is not None else range(self.total))
        async with grpc.aio.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            await asyncio.gather(
                *(self._client(stub, todo[w :: self.concurrency]) for w in range(self.concurrency))
            )

    async def _client(self, stub: gateway_pb2_grpc.BookingGatewayServiceStub, indexes: list[int]) -> None:
        for i in indexes:
            req = request(self.token(i), user=self.user, key=self.key(i), amount=self.amount(i))
            try:
                booking = await create_with_retry(
                    stub, req, deadline=self.create_deadline, retried=self.retries
                )
            except grpc.aio.AioRpcError as exc:
                # Not retryable, or still UNAVAILABLE at the deadline: the scenario fails, but
                # the rest of the load goes on so that every other invariant is checked too.
                self.refused[i] = f"{exc.code().name} {(exc.details() or '')[:200]}"
            else:
                self.accepted[i] = Accepted(i, booking.booking_id, self.token(i), self.amount(i))
            for count, event in self._waiters:
                if self.answered >= count:
                    event.set()
