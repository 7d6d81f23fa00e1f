"""What the saga tests read besides the gateway: the provider's ledger and inventory's counts.

Each is read from the database that owns it (the simulated PSP's ledger, the
inventory service's tables), never from a service's own report of itself, so an
invariant check compares what the services *did* with what the bookings *say*.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import grpc
from sqlalchemy import text

from choreo.db import make_engine
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.e2e.stack import Stack


@dataclass(frozen=True)
class Ledger:
    """What the simulated provider did, per booking (its idempotency keys are booking ids)."""

    #: Succeeded charges per booking, and their amounts.
    charges: Counter[str]
    charged_cents: dict[str, int]
    #: Refunds per booking, and their amounts.
    refunds: Counter[str]
    refunded_cents: dict[str, int]

    def net_cents(self, booking_ids: set[str]) -> int:
        """Charges minus refunds over these bookings."""
        return sum(self.charged_cents.get(b, 0) - self.refunded_cents.get(b, 0) for b in booking_ids)


async def read_ledger(stack: Stack) -> Ledger:
    engine = make_engine(stack.ledger_url)
    try:
        async with engine.connect() as conn:
            charged = (
                await conn.execute(
                    text("SELECT idempotency_key, amount_cents FROM psp_charges WHERE succeeded")
                )
            ).all()
            refunded = (
                await conn.execute(
                    text(
                        "SELECT c.idempotency_key, r.amount_cents FROM psp_refunds r "
                        "JOIN psp_charges c ON c.charge_id = r.charge_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    charges: Counter[str] = Counter(key for key, _ in charged)
    refunds: Counter[str] = Counter(key for key, _ in refunded)
    charged_cents: dict[str, int] = {}
    for key, cents in charged:
        charged_cents[key] = charged_cents.get(key, 0) + cents
    refunded_cents: dict[str, int] = {}
    for key, cents in refunded:
        refunded_cents[key] = refunded_cents.get(key, 0) + cents
    return Ledger(charges, charged_cents, refunds, refunded_cents)


async def reserved_units(stack: Stack, resource_id: str) -> int:
    """Units inventory holds reserved for a resource (0 when it never saw it)."""
    engine = make_engine(stack.database_urls["inventory"])
    try:
        async with engine.connect() as conn:
            value = (
                await conn.execute(
                    text("SELECT reserved FROM resources WHERE resource_id = :r"), {"r": resource_id}
                )
            ).scalar_one_or_none()
    finally:
        await engine.dispose()
    return int(value or 0)


def set_capacity(stack: Stack, resource_id: str, capacity: int) -> None:
    """The operator's CLI, run as an operator runs it: against inventory's database."""
    env = stack.environment("inventory")
    subprocess.run(
        [sys.executable, "-m", "inventory", "capacity", "set", resource_id, str(capacity)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )


async def trace_types(stub: gateway_pb2_grpc.BookingGatewayServiceStub, booking_id: str) -> list[str]:
    """The short type names of every fact of the booking's workflow, in causal order."""
    types: list[str] = []
    token = ""
    while True:
        page = await stub.GetWorkflowTrace(
            gw.GetWorkflowTraceRequest(booking_id=booking_id, page_size=100, page_token=token)
        )
        types.extend(e.event_type.rsplit(".", 1)[-1] for e in page.events)
        token = page.next_page_token
        if not token:
            return types


async def cancel(stub: gateway_pb2_grpc.BookingGatewayServiceStub, booking_id: str) -> gw.Booking:
    return (await stub.CancelBooking(gw.CancelBookingRequest(booking_id=booking_id), timeout=10)).booking


def status_code(exc: grpc.aio.AioRpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = exc.code()
    return code
