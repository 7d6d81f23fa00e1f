"""The trace of one demo workflow: fetched (``GetWorkflowTrace``), checked, printed.

A workflow's facts come from every service that reacts to it: booking and
payment, and the notification service's ``NotificationSent`` for each email (the
gateway projects the ``NOTIFICATION`` stream too). The trace is in causal order
when each fact follows the one that caused it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from choreo.contract import type_name
from choreo.gateway.v1 import gateway_pb2
from choreo.notification.v1 import events_pb2 as notification_events
from choreoctl.demo_emails import EMAILS_PER_BOOKING
from choreoctl.stack.console import Console, format_table

#: The fact of each email.
NOTIFICATION_SENT = type_name(notification_events.NotificationSent)
#: Seconds to wait for the emails' facts to reach the trace.
TRACE_TIMEOUT = 10.0


def describe_error(exc: BaseException) -> str:
    """``CODE: details`` of a gRPC error, else the exception's type and text."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def trace_problems(events: Sequence[gateway_pb2.TraceEvent]) -> list[str]:
    """What is wrong with a trace of one workflow (empty when each fact was caused by an earlier one).

    A workflow branches (booking's reaction and each email follow the same fact),
    so a fact's cause is any earlier fact of the trace, not only the one just
    before. The first fact's cause is the command that started the workflow (not
    a fact in any stream), or nothing; it must not be a fact of the trace itself.
    """
    if not events:
        return ["the trace is empty"]
    problems = []
    if events[0].causation_id in {e.event_id for e in events}:
        problems.append(f"the first fact {events[0].event_type} was caused by a later one")
    earlier = {events[0].event_id}
    for event in events[1:]:
        if event.causation_id not in earlier:
            problems.append(f"{event.event_type} was not caused by an earlier fact of the trace")
        earlier.add(event.event_id)
    return problems


def trace_table(events: Sequence[gateway_pb2.TraceEvent]) -> str:
    first = events[0].occurred_at.ToDatetime() if events else None
    facts = {event.event_id for event in events}
    rows = []
    for number, event in enumerate(events, 1):
        offset = (event.occurred_at.ToDatetime() - first).total_seconds() * 1000 if first else 0.0
        rows.append(
            [
                str(number),
                f"+{offset:.1f}ms",
                event.event_type,
                event.source,
                f"{event.stream}#{event.stream_sequence}",
                event.subject,
                event.event_id,
                _cause(event.causation_id, facts),
            ]
        )
    headers = ["#", "at", "type (ce-type)", "source", "stream#seq", "subject", "event id", "caused by"]
    return format_table(headers, rows)


def _cause(causation_id: str, facts: set[str]) -> str:
    if not causation_id:
        return "-"
    # A cause outside the trace is the command that started the workflow.
    return causation_id if causation_id in facts else f"{causation_id} (command)"


async def fetch_trace(
    stub: Any, booking_id: str, timeout: float = TRACE_TIMEOUT, interval: float = 0.2
) -> gateway_pb2.GetWorkflowTraceResponse:
    """The booking's trace, asked again until it holds its emails or ``timeout`` (the last one then).

    The gateway projects each stream on its own: the facts of a settled booking
    are there, its last email's ``NotificationSent`` may follow a moment later.
    """
    request = gateway_pb2.GetWorkflowTraceRequest(booking_id=booking_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response: gateway_pb2.GetWorkflowTraceResponse = await stub.GetWorkflowTrace(request, timeout=10)
        if emails_in(response.events) >= EMAILS_PER_BOOKING or loop.time() >= deadline:
            return response
        await asyncio.sleep(interval)


def emails_in(events: Sequence[gateway_pb2.TraceEvent]) -> int:
    return sum(event.event_type == NOTIFICATION_SENT for event in events)


async def show_trace(
    stub: Any, booking_id: str, label: str, console: Console, timeout: float = TRACE_TIMEOUT
) -> bool:
    """Prints the workflow trace of a settled booking; True when it is complete and in causal order."""
    try:
        response = await fetch_trace(stub, booking_id, timeout)
    except grpc.RpcError as exc:
        console.text(f"GetWorkflowTrace failed: {describe_error(exc)}")
        return False
    events = list(response.events)
    console.text(f"\nTrace of booking {label}, correlation id {response.correlation_id}:")
    console.text(trace_table(events))
    problems = trace_problems(events)
    workflow = len(events) - emails_in(events)
    if workflow < 3:
        problems.append(
            f"expected at least 3 facts (created, payment outcome, booking outcome), got {workflow}"
        )
    if emails_in(events) < EMAILS_PER_BOOKING:
        problems.append(
            f"expected {EMAILS_PER_BOOKING} emails ({NOTIFICATION_SENT}), got {emails_in(events)}"
        )
    for problem in problems:
        console.text(f"  problem: {problem}")
    return not problems
