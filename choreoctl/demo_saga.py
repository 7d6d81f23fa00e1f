"""``choreo up --demo``'s saga: a sold-out booking and a user's cancellation with its refund, traced.

A resource made for the run (``demo-room-<hex>``) gets one unit of capacity
through inventory's operator CLI (``python -m inventory capacity set``, with the
service's own environment, as an operator would run it). Then, in order:

1. a booking of that unit: inventory reserves it, payment charges it, CONFIRMED;
2. a second booking of one unit: none is left, inventory refuses it
   (``InventoryReservationFailed``), booking cancels it (``sold_out``), payment
   never charges it;
3. the first booking's user cancels it (HTTP ``POST /v1/bookings/{id}:cancel``):
   CANCELLED ``cancelled_by_user``, inventory releases the unit
   (``InventoryReleased``), payment refunds the charge (``PaymentRefunded``).

It prints both outcomes, both traces and how long the refund took, and fails
when an outcome or an expected fact is not there in time
(``choreoctl.demo_saga_checks``).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from google.protobuf import json_format

from choreo.gateway.v1 import gateway_pb2
from choreoctl.demo_calls import status_name, watch_until_terminal
from choreoctl.demo_emails import DEMO_EMAIL
from choreoctl.demo_saga_checks import (
    CANCELLED_FACT,
    PAID_THEN_CANCELLED,
    REFUNDED,
    SAGA_TIMEOUT,
    SOLD_OUT,
    SagaCase,
    Traced,
    gap_ms,
    saga_problems,
    wait_for_facts,
)
from choreoctl.demo_trace import describe_error, trace_table
from choreoctl.stack.console import Console, format_table
from choreoctl.stack.devauth import DEV_USER

#: The units of the demo's resource: the first booking takes the last one.
CAPACITY = 1
#: How the operator CLI is run (tests replace it).
INVENTORY_COMMAND: tuple[str, ...] = (sys.executable, "-m", "inventory")
#: Seconds the CLI may take.
CLI_TIMEOUT = 30.0


@dataclass
class SagaOutcome:
    """What happened to one saga booking.

    Attributes:
        case: What it should do.
        booking_id: Its id, once created.
        status: Its last known status (after the cancellation, for the cancelled one).
        reason: Its cancellation reason.
        traced: Its trace, once fetched.
        problems: What went wrong (an error, a wrong outcome, a trace that does not tell the story).
    """

    case: SagaCase
    booking_id: str = ""
    status: int = gateway_pb2.BOOKING_STATUS_UNSPECIFIED
    reason: str = ""
    traced: Traced | None = None
    problems: list[str] = field(default_factory=list)

    def settle(self, booking: gateway_pb2.Booking) -> None:
        self.status, self.reason = booking.status, booking.cancellation_reason

    def check_outcome(self) -> None:
        if (self.status, self.reason) != (self.case.expected_status, self.case.expected_reason):
            got = status_name(self.status) + (f"/{self.reason}" if self.reason else "")
            self.problems.append(f"ended {got}, not {expected(self.case)}")


def expected(case: SagaCase) -> str:
    return status_name(case.expected_status) + f"/{case.expected_reason}"


async def set_capacity(
    env: Mapping[str, str] | None,
    resource_id: str,
    capacity: int,
    command: Sequence[str] = INVENTORY_COMMAND,
    timeout: float = CLI_TIMEOUT,
) -> str | None:
    """Runs ``<command> capacity set RESOURCE_ID CAPACITY`` with inventory's environment.

    Returns:
        What went wrong, or None.
    """
    if env is None:
        return "the inventory service does not run here: no capacity to set"
    argv = [*command, "capacity", "set", resource_id, str(capacity)]
    shown = " ".join(["python -m inventory", *argv[len(command) :]])
    process = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"{shown} did not finish in {timeout:g}s"
    if process.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        return f"{shown} exited {process.returncode}: " + " | ".join(tail)
    return None


async def book(stub: Any, resource_id: str, case: SagaCase) -> SagaOutcome:
    """Books one unit of ``resource_id`` and waits for its outcome (CONFIRMED or CANCELLED)."""
    outcome = SagaOutcome(case)
    request = gateway_pb2.CreateBookingRequest(
        user_id=DEV_USER,
        amount_cents=9_900,
        currency="EUR",
        payment_token="tok_visa",
        idempotency_key=uuid.uuid4().hex,
        email=DEMO_EMAIL,
        resource_id=resource_id,
        quantity=1,
    )
    try:
        response: gateway_pb2.CreateBookingResponse = await stub.CreateBooking(request, timeout=10)
        outcome.booking_id = response.booking.booking_id
        outcome.settle(await watch_until_terminal(stub, outcome.booking_id))
    except (grpc.RpcError, RuntimeError) as exc:
        outcome.problems.append(describe_error(exc))
    return outcome


async def cancel_via_http(http: httpx.AsyncClient, booking_id: str) -> gateway_pb2.Booking:
    """``POST /v1/bookings/{id}:cancel``: the booking, now CANCELLED (200), or RuntimeError."""
    response = await http.post(f"/v1/bookings/{booking_id}:cancel", json={})
    if response.status_code != 200:
        raise RuntimeError(
            f"POST /v1/bookings/{booking_id}:cancel answered {response.status_code}: {response.text[:200]}"
        )
    return json_format.ParseDict(response.json(), gateway_pb2.Booking(), ignore_unknown_fields=True)


async def trace(stub: Any, outcome: SagaOutcome, timeout: float, since: float | None = None) -> None:
    """Waits for the outcome's trace and records what is wrong with it (see ``wait_for_facts``)."""
    if not outcome.booking_id:
        return
    try:
        outcome.traced = await wait_for_facts(
            stub, outcome.booking_id, outcome.case, since=since, timeout=timeout
        )
    except grpc.RpcError as exc:
        outcome.problems.append(f"GetWorkflowTrace failed: {describe_error(exc)}")
        return
    outcome.problems += saga_problems(outcome.case, outcome.traced.events)


async def run_saga(
    stub: Any,
    http: httpx.AsyncClient,
    inventory_env: Mapping[str, str] | None,
    console: Console,
    *,
    command: Sequence[str] = INVENTORY_COMMAND,
    timeout: float = SAGA_TIMEOUT,
) -> bool:
    """Runs the saga part of the demo; True when both bookings told their story in time.

    Args:
        stub: The gateway's gRPC stub.
        http: A client of the gateway's HTTP API (with the user's token, if any).
        inventory_env: The inventory service's environment, for its operator CLI.
        console: Where the account goes.
        command: How the operator CLI is run.
        timeout: Seconds each booking's trace may take to show its facts.
    """
    resource = f"demo-room-{uuid.uuid4().hex[:8]}"
    console.text(
        f"\nSaga: resource {resource} with {CAPACITY} unit (python -m inventory capacity set):"
        "\none booking takes it, the next one is sold out, then the first one's user cancels it.\n"
    )
    problem = await set_capacity(inventory_env, resource, CAPACITY, command)
    if problem is not None:
        console.text(f"  problem: {problem}")
        return False
    paid = await book(stub, resource, PAID_THEN_CANCELLED)
    sold_out = await book(stub, resource, SOLD_OUT)
    sold_out.check_outcome()
    cancelled_at: float | None = None
    if paid.booking_id and not paid.problems:
        if paid.status != gateway_pb2.BOOKING_STATUS_CONFIRMED:
            paid.problems.append(
                f"ended {status_name(paid.status)}/{paid.reason} before its user cancelled it"
            )
        else:
            try:
                cancelled_at = asyncio.get_running_loop().time()
                paid.settle(await cancel_via_http(http, paid.booking_id))
            except (httpx.HTTPError, RuntimeError) as exc:
                paid.problems.append(describe_error(exc))
            paid.check_outcome()
    await asyncio.gather(trace(stub, paid, timeout, cancelled_at), trace(stub, sold_out, timeout))
    outcomes = [paid, sold_out]
    console.text(outcomes_table(resource, outcomes))
    for outcome in outcomes:
        show(outcome, console)
    refund = refund_line(paid)
    if refund:
        console.text(f"\n{refund}")
    failed = [o for o in outcomes if o.problems]
    if failed:
        console.text(f"\n{len(failed)} of {len(outcomes)} saga bookings did not tell their story.")
    return not failed


def outcomes_table(resource: str, outcomes: Sequence[SagaOutcome]) -> str:
    rows = [
        [
            o.booking_id or "-",
            resource,
            o.case.label,
            status_name(o.status),
            o.reason or "-",
            "ok" if not o.problems else f"EXPECTED {expected(o.case)}",
        ]
        for o in outcomes
    ]
    return format_table(["booking id", "resource", "story", "status", "reason", "check"], rows)


def show(outcome: SagaOutcome, console: Console) -> None:
    """Prints the booking's trace and its problems."""
    if outcome.traced is not None:
        label = f"{outcome.booking_id} ({outcome.case.label})"
        console.text(f"\nTrace of booking {label}, correlation id {outcome.traced.correlation_id}:")
        console.text(trace_table(outcome.traced.events))
    for problem in outcome.problems:
        console.text(f"  problem: {problem}")


def refund_line(paid: SagaOutcome) -> str:
    """How long the refund took: between the facts (services' clocks), and as the demo saw it."""
    if paid.traced is None or paid.traced.complete_after is None:
        return ""
    between = gap_ms(paid.traced.events, CANCELLED_FACT, REFUNDED)
    if between is None:
        return ""
    return (
        f"Refund: PaymentRefunded {between:.0f} ms after BookingCancelled (their timestamps); the trace"
        f" showed the release and the refund {paid.traced.complete_after * 1000:.0f} ms after POST :cancel."
    )
