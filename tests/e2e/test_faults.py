"""Crash the services mid-flow: every booking still ends where its token says, charged once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter

import grpc

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.e2e.client import EXPECTED, create_with_retry, request, wait_terminal
from tests.e2e.stack import Stack

TOTAL = 200


async def test_sigkill_payment_then_booking_while_bookings_flow(stack: Stack) -> None:
    tokens = [list(EXPECTED)[i % len(EXPECTED)] for i in range(TOTAL)]
    created: dict[int, gw.Booking] = {}
    retried: list[str] = []
    milestones = {40: asyncio.Event(), 80: asyncio.Event()}
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)

        async def client(worker: int) -> None:
            for i in range(worker, TOTAL, 8):
                # An idempotency key per booking makes the client's retries during the outage safe.
                req = request(tokens[i], user="chaos", key=f"chaos-{i}")
                created[i] = await create_with_retry(stub, req, deadline=90, retried=retried)
                if len(created) in milestones:
                    milestones[len(created)].set()
                await asyncio.sleep(0.01)

        async def chaos() -> None:
            await milestones[40].wait()
            stack.kill("payment")
            await milestones[80].wait()
            stack.kill("booking")
            await asyncio.sleep(1.0)  # clients meet UNAVAILABLE and retry meanwhile
            await asyncio.to_thread(stack.start, "booking")
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stack.start, "payment")

        await asyncio.gather(chaos(), *(client(w) for w in range(8)))
        finals = await asyncio.gather(
            *(wait_terminal(stub, b.booking_id, timeout=60) for b in created.values())
        )
        listed = await _count_user(stub, "chaos")

    assert len(created) == TOTAL
    assert "UNAVAILABLE" in retried, "the booking outage was not felt by any client: the test proves nothing"
    assert listed == TOTAL, "a retried create made a second booking"
    for i, final in zip(created, finals, strict=True):
        assert (final.status, final.cancellation_reason) == EXPECTED[tokens[i]], (i, tokens[i])

    with sqlite3.connect(stack.root / "psp-ledger.db") as ledger:
        charges = Counter(key for (key,) in ledger.execute("SELECT idempotency_key FROM psp_charges"))
    ids = {b.booking_id for b in created.values()}
    assert set(charges) == ids
    assert max(charges.values()) == 1, "a booking was charged twice"


async def _count_user(stub: gateway_pb2_grpc.BookingGatewayServiceStub, user: str) -> int:
    total, token = 0, ""
    while True:
        page = await stub.ListBookings(gw.ListBookingsRequest(user_id=user, page_size=500, page_token=token))
        total += len(page.bookings)
        token = page.next_page_token
        if not token:
            return total
