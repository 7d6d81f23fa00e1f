"""The saga under faults: processes killed mid-way, a cancel racing the charge, a payment that
answers after the booking timed out. Each checks the invariants on what the services did
(the provider's ledger, inventory's counts), not on what they say.

Invariants, once every booking has settled:

- units reserved for a resource = units of its CONFIRMED bookings (none is left PENDING);
- each booking charged at most once and refunded at most once;
- charges - refunds = the amounts of the CONFIRMED bookings.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.e2e.client import create_with_retry, wait_terminal
from tests.e2e.saga import cancel, read_ledger, reserved_units, set_capacity, trace_types
from tests.e2e.stack import Stack
from tests.e2e.test_saga import resource_request
from tests.support import eventually


def saga_stack(root: Path, nats_url: str, **env: str) -> Stack:
    return Stack(root, nats_url, env=dict(env), joining=("inventory",))


@pytest.fixture
def slow_stack(nats_server: NatsServer, tmp_path: Path) -> Iterator[Stack]:
    """Inventory beside the rest; the provider takes 0.4 s per charge, so kills land mid-saga."""
    s = saga_stack(tmp_path, nats_server.url, PAYMENT_PROVIDER_LATENCY_MS="400")
    try:
        s.start()
        yield s
    finally:
        s.stop()


async def settle_all(
    stub: gateway_pb2_grpc.BookingGatewayServiceStub, ids: list[str], timeout: float = 90
) -> list[gw.Booking]:
    return list(await asyncio.gather(*(wait_terminal(stub, b, timeout) for b in ids)))


async def check_invariants(stack: Stack, finals: list[gw.Booking], resource: str) -> None:
    confirmed = [b for b in finals if b.status == gw.BOOKING_STATUS_CONFIRMED]
    assert await reserved_units(stack, resource) == sum(b.quantity for b in confirmed)
    ledger = await read_ledger(stack)
    assert max(ledger.charges.values(), default=0) <= 1, "a booking was charged twice"
    assert max(ledger.refunds.values(), default=0) <= 1, "a booking was refunded twice"
    ids = {b.booking_id for b in finals}
    assert ledger.net_cents(ids) == sum(b.amount_cents for b in confirmed)


async def test_sigkill_inventory_and_payment_mid_saga(slow_stack: Stack) -> None:
    stack = slow_stack
    capacity, total = 15, 24
    await asyncio.to_thread(set_capacity, stack, "hall", capacity)
    rng = random.Random(12)
    tokens = [rng.choice(["tok_visa", "tok_visa", "tok_chargeDeclined"]) for _ in range(total)]
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created: list[gw.Booking] = []

        async def client() -> None:
            for i, token in enumerate(tokens):
                req = resource_request(token, "hall", quantity=1 + i % 2, amount=1000 + i)
                req.idempotency_key = f"kill-{i}"
                created.append(await create_with_retry(stub, req))
                await asyncio.sleep(0.05)

        async def chaos() -> None:
            await asyncio.sleep(0.4)
            stack.kill("inventory")
            await asyncio.sleep(0.3)
            stack.kill("payment")  # a charge is in flight at the provider now and then
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stack.start, "inventory")
            await asyncio.sleep(0.3)
            await asyncio.to_thread(stack.start, "payment")
            await asyncio.sleep(0.6)
            stack.kill("payment")
            stack.kill("inventory")
            await asyncio.to_thread(stack.start, "payment", "inventory")

        await asyncio.gather(client(), chaos())
        finals = await settle_all(stub, [b.booking_id for b in created])
        # A user cancels some paid bookings while payment is killed again: refunds land after.
        paid = [b for b in finals if b.status == gw.BOOKING_STATUS_CONFIRMED][:4]
        stack.kill("payment")
        for b in paid:
            await cancel(stub, b.booking_id)
        await asyncio.to_thread(stack.start, "payment")
        for b in paid:

            async def refunded(booking_id: str = b.booking_id) -> bool:
                return "PaymentRefunded" in await trace_types(stub, booking_id)

            await eventually(refunded, timeout=30, message=f"the refund of {b.booking_id}")
        finals = await settle_all(stub, [b.booking_id for b in created])

    assert stack.starts["payment"] >= 3 and stack.starts["inventory"] >= 3
    assert len(paid) == 4, "too few paid bookings to cancel: the test proves less than it says"
    assert any(b.cancellation_reason == "sold_out" for b in finals), "capacity was never reached"

    async def released() -> bool:
        confirmed = sum(b.quantity for b in finals if b.status == gw.BOOKING_STATUS_CONFIRMED)
        return await reserved_units(stack, "hall") == confirmed

    await eventually(released, timeout=30, message="every cancelled booking's units released")
    await check_invariants(stack, finals, "hall")


async def test_cancel_racing_the_payment(slow_stack: Stack) -> None:
    """Cancels land before, during and after the 0.4 s charge: each ends refunded or never charged."""
    stack = slow_stack
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        bookings = []
        for i, delay in enumerate([0.0, 0.1, 0.3, 0.45, 0.6, 0.9]):
            created = (await stub.CreateBooking(resource_request("tok_visa", "race", amount=500 + i))).booking
            await asyncio.sleep(delay)
            try:
                await cancel(stub, created.booking_id)
            except grpc.aio.AioRpcError as exc:  # pragma: no cover - the assertion names it
                pytest.fail(f"cancel after {delay}s: {exc.code()} {exc.details()}")
            bookings.append(created.booking_id)
        finals = await settle_all(stub, bookings)
        assert {b.cancellation_reason for b in finals} == {"cancelled_by_user"}

        async def quiet() -> bool:
            ledger = await read_ledger(stack)
            return all(ledger.charges[b] == ledger.refunds[b] for b in bookings) and (
                await reserved_units(stack, "race") == 0
            )

        await eventually(quiet, timeout=30, message="every charge refunded and every unit released")
        ledger = await read_ledger(stack)
    await check_invariants(stack, finals, "race")
    assert ledger.net_cents(set(bookings)) == 0


@pytest.fixture
def timeout_stack(nats_server: NatsServer, tmp_path: Path) -> Iterator[Stack]:
    """A 2 s payment timeout and a provider that answers after 4 s: every payment is late."""
    s = saga_stack(
        tmp_path,
        nats_server.url,
        BOOKING_PAYMENT_TIMEOUT_SECONDS="2",
        PAYMENT_PROVIDER_LATENCY_MS="4000",
    )
    try:
        s.start()
        yield s
    finally:
        s.stop()


async def test_timeout_then_late_payment_is_refunded(timeout_stack: Stack) -> None:
    stack = timeout_stack
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        with_resource = (await stub.CreateBooking(resource_request("tok_visa", "late", 2))).booking
        plain = (await stub.CreateBooking(resource_request("tok_visa", "", 0))).booking
        # booking restarts while both wait: the timeout still fires (JetStream holds it).
        await asyncio.sleep(0.5)
        await asyncio.to_thread(stack.terminate, "booking")
        await asyncio.to_thread(stack.start, "booking")
        finals = await settle_all(stub, [with_resource.booking_id, plain.booking_id], timeout=30)
        assert {(b.status, b.cancellation_reason) for b in finals} == {
            (gw.BOOKING_STATUS_CANCELLED, "payment_timeout")
        }

        async def refunded() -> bool:
            types = [await trace_types(stub, b.booking_id) for b in finals]
            return all("PaymentRefunded" in t for t in types)

        await eventually(refunded, timeout=30, message="the late payments refunded")
        for b in finals:
            final = (await stub.GetBooking(gw.GetBookingRequest(booking_id=b.booking_id))).booking
            assert (final.status, final.cancellation_reason) == (
                gw.BOOKING_STATUS_CANCELLED,
                "payment_timeout",
            )
        types = await trace_types(stub, with_resource.booking_id)
    assert types.count("PaymentSucceeded") == types.count("PaymentRefunded") == 1
    assert types.count("InventoryReleased") == 1
    assert "BookingConfirmed" not in types
    ledger = await read_ledger(stack)
    assert ledger.net_cents({b.booking_id for b in finals}) == 0
    assert await reserved_units(stack, "late") == 0
