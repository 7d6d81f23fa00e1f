"""What the demo's saga bookings must show in their traces, and the wait until they show it.

A saga booking's trace holds the facts of every service that reacted to it
(booking, inventory, payment, notification). Each expected fact must be there
exactly once (a compensation that ran twice is a bug, not a detail), none of the
facts that must never happen (a sold-out booking is never charged), and each
fact after the fact that caused it; the compensations are caused by the
cancellation itself. The facts of one booking sit on several streams that the
gateway projects independently, so the trace is asked again until it is
complete or the timeout passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.contract import type_name
from choreo.gateway.v1 import gateway_pb2
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreoctl.demo_calls import CANCELLED
from choreoctl.demo_trace import emails_in

CREATED = type_name(booking_events.BookingCreated)
CONFIRMED_FACT = type_name(booking_events.BookingConfirmed)
CANCELLED_FACT = type_name(booking_events.BookingCancelled)
RESERVED = type_name(inventory_events.InventoryReserved)
REFUSED = type_name(inventory_events.InventoryReservationFailed)
RELEASED = type_name(inventory_events.InventoryReleased)
SUCCEEDED = type_name(payment_events.PaymentSucceeded)
FAILED = type_name(payment_events.PaymentFailed)
REFUNDED = type_name(payment_events.PaymentRefunded)

#: Seconds a saga booking's trace may take to show every expected fact.
SAGA_TIMEOUT = 30.0
#: Seconds to wait for its emails once its facts are there (they are shown, not required).
EMAIL_GRACE = 5.0


@dataclass(frozen=True)
class SagaCase:
    """One saga booking: its story, its outcome and the facts its trace must (not) hold.

    Attributes:
        label: The story, as the outcome table names it.
        expected_status: Its final status.
        expected_reason: Its cancellation reason.
        facts: The facts its trace holds, each exactly once.
        never: Facts its trace must not hold.
        roots: Facts caused by a command (a cause outside the trace).
        causes: (fact, the type of the fact that caused it).
        emails: The ``NotificationSent`` facts waited for (shown, not required).
    """

    label: str
    expected_status: int
    expected_reason: str
    facts: tuple[str, ...]
    never: tuple[str, ...]
    roots: frozenset[str]
    causes: tuple[tuple[str, str], ...]
    emails: int


#: A booking of the resource's last unit, charged, confirmed, then cancelled by its user.
PAID_THEN_CANCELLED = SagaCase(
    label="paid, then cancelled by its user",
    expected_status=CANCELLED,
    expected_reason="cancelled_by_user",
    facts=(CREATED, RESERVED, SUCCEEDED, CONFIRMED_FACT, CANCELLED_FACT, RELEASED, REFUNDED),
    never=(REFUSED, FAILED),
    roots=frozenset({CREATED, CANCELLED_FACT}),
    causes=((SUCCEEDED, RESERVED), (RELEASED, CANCELLED_FACT), (REFUNDED, CANCELLED_FACT)),
    emails=3,
)
#: A booking of a resource with no unit left: refused, cancelled, never charged.
SOLD_OUT = SagaCase(
    label="sold out",
    expected_status=CANCELLED,
    expected_reason="sold_out",
    facts=(CREATED, REFUSED, CANCELLED_FACT),
    never=(RESERVED, RELEASED, SUCCEEDED, FAILED, REFUNDED),
    roots=frozenset({CREATED}),
    causes=((REFUSED, CREATED), (CANCELLED_FACT, REFUSED)),
    emails=2,
)


def short(fact_type: str) -> str:
    """``PaymentRefunded`` for ``choreo.payment.v1.PaymentRefunded``."""
    return fact_type.rsplit(".", 1)[-1]


def missing_facts(case: SagaCase, events: Sequence[gateway_pb2.TraceEvent]) -> list[str]:
    """The expected facts the trace does not hold yet."""
    present = {event.event_type for event in events}
    return [fact for fact in case.facts if fact not in present]


def saga_problems(case: SagaCase, events: Sequence[gateway_pb2.TraceEvent]) -> list[str]:
    """What is wrong with a saga booking's trace (empty when it tells ``case``'s story)."""
    types = [event.event_type for event in events]
    problems = [f"{short(fact)} is missing" for fact in missing_facts(case, events)]
    problems += [
        f"{short(fact)} appears {types.count(fact)} times, not once"
        for fact in case.facts
        if types.count(fact) > 1
    ]
    problems += [f"{short(fact)} must not happen" for fact in case.never if fact in types]
    position = {event.event_id: number for number, event in enumerate(events)}
    by_id = {event.event_id: event for event in events}
    for number, event in enumerate(events):
        cause = position.get(event.causation_id)
        if cause is None and event.event_type not in case.roots:
            problems.append(f"{short(event.event_type)} was not caused by a fact of the trace")
        elif cause is not None and cause > number:
            problems.append(f"{short(event.event_type)} comes before its cause")
    for fact, cause_type in case.causes:
        caused = [event for event in events if event.event_type == fact]
        if len(caused) == 1:
            cause_event = by_id.get(caused[0].causation_id)
            if cause_event is None or cause_event.event_type != cause_type:
                problems.append(f"{short(fact)} was not caused by {short(cause_type)}")
    return problems


def gap_ms(events: Sequence[gateway_pb2.TraceEvent], first: str, then: str) -> float | None:
    """Milliseconds between the facts ``first`` and ``then`` (their services' clocks), if both are there."""
    times = {event.event_type: event.occurred_at.ToDatetime() for event in events}
    if first not in times or then not in times:
        return None
    return (times[then] - times[first]).total_seconds() * 1000


@dataclass
class Traced:
    """A saga booking's trace as last fetched.

    Attributes:
        correlation_id: The workflow's correlation id.
        events: Its facts, in the gateway's causal order.
        complete_after: Seconds from the start of the wait (or its ``since``) until every expected
            fact was there (``None``: they never all were).
    """

    correlation_id: str
    events: list[gateway_pb2.TraceEvent]
    complete_after: float | None


async def wait_for_facts(
    stub: Any,
    booking_id: str,
    case: SagaCase,
    *,
    since: float | None = None,
    timeout: float = SAGA_TIMEOUT,
    email_grace: float = EMAIL_GRACE,
    interval: float = 0.05,
) -> Traced:
    """The booking's trace, asked again until it holds ``case``'s facts and emails, or the timeouts pass.

    Emails are waited for at most ``email_grace`` seconds once the facts are there.
    ``since`` (the event loop's clock, default now) is where ``complete_after`` counts from:
    the moment the cancellation was asked for, for the refund's time.

    Raises:
        grpc.RpcError: ``GetWorkflowTrace`` failed.
    """
    request = gateway_pb2.GetWorkflowTraceRequest(booking_id=booking_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    origin = started if since is None else since
    complete_after: float | None = None
    complete_at = started
    while True:
        response: gateway_pb2.GetWorkflowTraceResponse = await stub.GetWorkflowTrace(request, timeout=10)
        events = list(response.events)
        now = loop.time()
        if complete_after is None and not missing_facts(case, events):
            complete_after = now - origin
            complete_at = now
        done = complete_after is not None and (
            emails_in(events) >= case.emails or now >= complete_at + email_grace
        )
        if done or now - started >= timeout:
            return Traced(response.correlation_id, events, complete_after)
        await asyncio.sleep(interval)
