"""Where a booking's time goes, measured from outside the services.

Every fact carries ``ce-time`` (stamped by the handler that emitted it, inside
its transaction) and JetStream records when it stored the message. With the
client's own send/reply/terminal times (``choreoctl.bench.load.Trip``) and the
correlation id the client chose, one booking's latency splits into stages
that add up to the whole:

==================  ===========================================================================
stage               from -> to (what it contains)
==================  ===========================================================================
create_to_handler   client sends CreateBooking -> BookingCreated stamped (gRPC, gateway,
                    NATS request, command batching, booking handler)
create_reply        BookingCreated stamped -> client has the reply (commit, reply, gateway's
                    read-model write, gRPC response); runs in parallel with the next stages
outbox_created      BookingCreated stamped -> stored in JetStream (commit + outbox relay + publish)
payment_consumer    BookingCreated stored -> PaymentSucceeded stamped (delivery, payment handler)
outbox_payment      PaymentSucceeded stamped -> stored (commit + outbox relay + publish)
booking_consumer    PaymentSucceeded stored -> BookingConfirmed stamped (delivery, booking handler)
outbox_confirmed    BookingConfirmed stamped -> stored (commit + outbox relay + publish)
projection          BookingConfirmed stored -> client sees CONFIRMED (gateway feed, read-model
                    commit, watcher wake-up, response)
==================  ===========================================================================

All timestamps are wall-clock times of one machine, so they are comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from booking.topology import STREAM as BOOKING
from choreo import natsclient
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.envelope import H_CORRELATION, H_TIME, H_TYPE
from choreo.natsidentity import tool_inbox
from choreo.payment.v1 import events_pb2 as payment_events
from choreoctl.bench.load import Trip
from choreoctl.bench.stats import LatencySummary
from payment.topology import STREAM as PAYMENT

CREATED = booking_events.BookingCreated.DESCRIPTOR.full_name
CONFIRMED = booking_events.BookingConfirmed.DESCRIPTOR.full_name
PAID = payment_events.PaymentSucceeded.DESCRIPTOR.full_name

#: Stage names in the order a booking goes through them.
STAGES = (
    "create_to_handler",
    "create_reply",
    "outbox_created",
    "payment_consumer",
    "outbox_payment",
    "booking_consumer",
    "outbox_confirmed",
    "projection",
)


@dataclass(frozen=True, slots=True)
class Fact:
    """When one fact was stamped by its handler and stored by JetStream (epoch seconds)."""

    stamped: float
    stored: float


def parse_time(value: str) -> float:
    """An RFC 3339 ``ce-time`` as epoch seconds."""
    return datetime.fromisoformat(value).astimezone(UTC).timestamp()


async def read_facts(
    nats_url: str, since: float, until: float, wanted: set[str], idle_timeout: float = 2.0
) -> dict[str, dict[str, Fact]]:
    """The facts of the ``wanted`` workflows stored between ``since`` and ``until``.

    Reads BOOKING and PAYMENT from ``since`` with ordered consumers (no state
    is left on the server), until a message stored after ``until`` or the end.

    Returns:
        By correlation id, by ``ce-type``: the fact's times.
    """
    facts: dict[str, dict[str, Fact]] = {}
    nc = await natsclient.connect(nats_url, name="bench-stages", inbox_prefix=tool_inbox(nats_url, "bench"))
    try:
        js = nc.jetstream()
        start = datetime.fromtimestamp(since, UTC)
        for stream in (BOOKING.name, PAYMENT.name):
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
            sub = await js.subscribe(
                f"{stream.lower()}.>",
                stream=stream,
                ordered_consumer=True,
                config=config,
                pending_msgs_limit=-1,
            )
            try:
                while True:
                    try:
                        msg = await sub.next_msg(idle_timeout)
                    except TimeoutError:
                        break
                    meta = msg.metadata
                    stored = meta.timestamp.timestamp()
                    headers = msg.headers or {}
                    correlation = headers.get(H_CORRELATION, "")
                    if correlation in wanted and H_TIME in headers:
                        facts.setdefault(correlation, {})[headers.get(H_TYPE, "")] = Fact(
                            parse_time(headers[H_TIME]), stored
                        )
                    if stored > until or meta.num_pending == 0:
                        break
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
    finally:
        await nc.close()
    return facts


def split(trip: Trip, facts: dict[str, Fact]) -> dict[str, float] | None:
    """One booking's stage durations in milliseconds (``None`` if a fact is missing)."""
    try:
        created, paid, confirmed = facts[CREATED], facts[PAID], facts[CONFIRMED]
    except KeyError:
        return None
    ms = 1000.0
    return {
        "create_to_handler": (created.stamped - trip.sent) * ms,
        "create_reply": (trip.created - created.stamped) * ms,
        "outbox_created": (created.stored - created.stamped) * ms,
        "payment_consumer": (paid.stamped - created.stored) * ms,
        "outbox_payment": (paid.stored - paid.stamped) * ms,
        "booking_consumer": (confirmed.stamped - paid.stored) * ms,
        "outbox_confirmed": (confirmed.stored - confirmed.stamped) * ms,
        "projection": (trip.terminal - confirmed.stored) * ms,
    }


async def analyze(
    nats_url: str, trips: Sequence[Trip], window: tuple[float, float], sample_seconds: float = 2.0
) -> dict[str, Any]:
    """Stage percentiles of the bookings sent in the first ``sample_seconds`` of ``window``.

    Args:
        nats_url: The system's NATS server.
        trips: What the client recorded.
        window: Wall-clock start and end of the measurement window.
        sample_seconds: Length of the sample (reading facts costs time; a sample is enough).

    Returns:
        ``sampled`` (bookings split), ``missing`` (facts not found), and for each
        stage the ``LatencySummary`` of its durations in milliseconds.
    """
    start = window[0]
    end = min(window[1], start + sample_seconds)
    sample = [t for t in trips if start <= t.sent < end]
    if not sample:
        return {"sampled": 0, "missing": 0, "stages_ms": {}}
    until = max(t.terminal for t in sample) + 1.0
    facts = await read_facts(nats_url, start - 1.0, until, {t.correlation_id for t in sample})
    durations: dict[str, list[float]] = {name: [] for name in STAGES}
    missing = 0
    for trip in sample:
        parts = split(trip, facts.get(trip.correlation_id, {}))
        if parts is None:
            missing += 1
            continue
        for name, value in parts.items():
            durations[name].append(value)
    return {
        "sampled": len(sample) - missing,
        "missing": missing,
        "stages_ms": {name: LatencySummary.of(values).to_dict() for name, values in durations.items()},
    }
