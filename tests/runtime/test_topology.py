"""Topology: declarations agree with the contract; handlers emit only what their route declares."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.contract import ContractError, command_options, fact_stream, fact_subject
from choreo.envelope import Envelope
from choreo.errors import Failure, classify
from choreo.handler import HandlerContext, Route, UndeclaredEmit
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.topology import Serves, Stream, Subscription, Topology, TopologyError

BOOKING = Stream("BOOKING", ("booking.>",))


async def nothing(_event: object, _ctx: HandlerContext) -> None:
    return None


def test_the_contract_names_each_facts_subject_and_stream() -> None:
    assert fact_subject(booking_events.BookingCreated) == "booking.created"
    assert fact_stream(booking_events.BookingCreated) == "BOOKING"
    assert fact_subject(payment_events.PaymentFailed) == "payment.failed"
    assert fact_stream(payment_events.PaymentFailed) == "PAYMENT"
    command = command_options(commands_pb2.CreateBookingCommand)
    assert (command.subject, command.queue) == ("cmd.booking.create", "booking")


def test_a_message_without_the_option_is_no_fact_and_no_command() -> None:
    with pytest.raises(ContractError, match=r"google\.protobuf\.Timestamp has no"):
        fact_subject(timestamp_pb2.Timestamp)
    with pytest.raises(ContractError, match="BookingCreated has no"):
        command_options(booking_events.BookingCreated)


def test_a_subscription_filters_exactly_its_routes_subjects() -> None:
    sub = Subscription(
        "reader",
        (
            Route(payment_events.PaymentSucceeded, nothing),
            Route(payment_events.PaymentFailed, nothing),
        ),
    )
    assert sub.stream == "PAYMENT"
    assert sub.subjects == ["payment.failed", "payment.succeeded"]


def test_a_subscription_reads_one_stream() -> None:
    routes = (Route(payment_events.PaymentFailed, nothing), Route(booking_events.BookingCreated, nothing))
    with pytest.raises(TopologyError, match="several streams"):
        Subscription("reader", routes)


def test_a_service_publishes_only_on_the_stream_it_owns() -> None:
    with pytest.raises(TopologyError, match="puts it on stream PAYMENT, but it owns BOOKING"):
        Topology("booking", stream=BOOKING, publishes=(payment_events.PaymentFailed,))
    with pytest.raises(TopologyError, match="owns no stream"):
        Topology("reader", publishes=(booking_events.BookingCreated,))
    with pytest.raises(TopologyError, match=r"does not capture booking\.created"):
        Topology(
            "booking", stream=Stream("BOOKING", ("booking.x.>",)), publishes=(booking_events.BookingCreated,)
        )


def test_a_route_or_command_emits_only_what_the_service_publishes() -> None:
    route = Route(payment_events.PaymentFailed, nothing, emits=(booking_events.BookingCancelled,))
    with pytest.raises(
        TopologyError, match=r"emits choreo\.booking\.v1\.BookingCancelled, which booking does not"
    ):
        Topology(
            "booking",
            stream=BOOKING,
            publishes=(booking_events.BookingCreated,),
            subscriptions=(Subscription("booking", (route,)),),
        )
    with pytest.raises(TopologyError, match=r"command choreo\.booking\.v1\.CreateBookingCommand emits"):
        Topology(
            "booking",
            stream=BOOKING,
            serves=(Serves(commands_pb2.CreateBookingCommand, emits=(booking_events.BookingCreated,)),),
        )


def test_the_reference_services_declarations_hold() -> None:
    from booking.topology import TOPOLOGY

    assert TOPOLOGY.stream == BOOKING
    (payments,) = TOPOLOGY.subscriptions
    assert (payments.stream, payments.subjects) == ("PAYMENT", ["payment.failed", "payment.succeeded"])
    assert TOPOLOGY.serves[0].subject == "cmd.booking.create"


def context(emits: tuple[type[booking_events.BookingConfirmed], ...]) -> HandlerContext:
    incoming = Envelope.wrap(
        payment_events.PaymentSucceeded(booking_id="b-1"),
        source="payment",
        subject="payment.succeeded",
        correlation_id="wf-1",
    )
    return HandlerContext(conn=None, envelope=incoming, source="booking", emits=emits)  # type: ignore[arg-type]


def test_a_handler_emits_a_declared_fact_on_its_contract_subject() -> None:
    ctx = context((booking_events.BookingConfirmed,))
    env = ctx.emit(booking_events.BookingConfirmed(booking_id="b-1"))
    assert env.subject == "booking.confirmed"
    assert (env.correlation_id, env.causation_id) == ("wf-1", ctx.envelope.id)
    assert ctx.outgoing == [env]


def test_an_undeclared_emit_is_refused_and_dead_lettered_at_once() -> None:
    ctx = context((booking_events.BookingConfirmed,))
    with pytest.raises(
        UndeclaredEmit, match="BookingCancelled is not among the facts this route emits"
    ) as info:
        ctx.emit(booking_events.BookingCancelled(booking_id="b-1"))
    assert ctx.outgoing == []
    assert classify(info.value) is Failure.PERMANENT
