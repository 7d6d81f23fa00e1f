"""Topology: declarations agree with the contract; handlers emit only what their route declares."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message

from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.contract import ContractError, command_options, fact_stream, fact_subject
from choreo.envelope import Envelope
from choreo.errors import Failure, classify
from choreo.handler import HandlerContext, Route, UndeclaredEmit
from choreo.options.v1 import options_pb2
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


def contract_message(name: str, **options: Any) -> type[Message]:
    """A message of a contract written by a third party: ``fact=`` or ``command=`` its option's fields."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"thirdparty/v1/{name.lower()}.proto", package="thirdparty.v1", syntax="proto3"
    )
    file.dependency.append("choreo/options/v1/options.proto")
    message = file.message_type.add(name=name)
    if "fact" in options:
        message.options.Extensions[options_pb2.fact].CopyFrom(options_pb2.FactOptions(**options["fact"]))
    if "command" in options:
        message.options.Extensions[options_pb2.command].CopyFrom(
            options_pb2.CommandOptions(**options["command"])
        )
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"thirdparty.v1.{name}"))


def test_a_command_without_a_queue_group_is_refused() -> None:
    """Without a queue group every replica of the serving service would run each command."""
    for name, option in (
        ("NoQueue", {"subject": "cmd.thirdparty.charge"}),
        ("SpacedQueue", {"subject": "cmd.thirdparty.refund", "queue": "third party"}),
    ):
        with pytest.raises(ContractError, match=f"{name}'s .*queue"):
            command_options(contract_message(name, command=option))
    served = contract_message("Queued", command={"subject": "cmd.thirdparty.void", "queue": "thirdparty"})
    assert command_options(served).queue == "thirdparty"


def test_a_subject_with_a_wildcard_or_a_bad_stream_name_is_refused() -> None:
    """A wildcard subject would make a consumer derived from the type read everything under it."""
    facts = {
        "WildFact": {"subject": "thirdparty.>", "stream": "THIRDPARTY"},
        "StarFact": {"subject": "thirdparty.*.done", "stream": "THIRDPARTY"},
        "EmptyToken": {"subject": "thirdparty..done", "stream": "THIRDPARTY"},
        "DottedStream": {"subject": "thirdparty.done", "stream": "THIRD.PARTY"},
    }
    for name, option in facts.items():
        with pytest.raises(ContractError, match=f"{name}'s"):
            fact_subject(contract_message(name, fact=option))
    with pytest.raises(ContractError, match=r"WildCommand's .*not a literal NATS subject"):
        command_options(contract_message("WildCommand", command={"subject": "cmd.>", "queue": "q"}))
    fine = contract_message("Done", fact={"subject": "thirdparty.done", "stream": "THIRDPARTY"})
    assert (fact_subject(fine), fact_stream(fine)) == ("thirdparty.done", "THIRDPARTY")


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


def test_a_stream_that_captures_a_served_commands_subject_is_refused() -> None:
    """JetStream would store each request as a fact and answer it with a publish ack."""
    greedy = Stream("BOOKING", ("booking.>", "cmd.booking.>"))
    with pytest.raises(TopologyError, match=r"captures cmd\.booking\.create, the subject of command"):
        Topology("booking", stream=greedy, serves=(Serves(commands_pb2.CreateBookingCommand),))
    Topology("booking", stream=BOOKING, serves=(Serves(commands_pb2.CreateBookingCommand),))


def test_a_name_jetstream_would_refuse_is_refused_at_build() -> None:
    """A durable JetStream refuses was retried as if NATS were not ready yet: a consumer waiting forever."""
    route = Route(payment_events.PaymentFailed, nothing)
    for durable in ("loyalty.points", "two words", "all>", "a/b", ""):
        with pytest.raises(TopologyError, match="durable consumer name"):
            Subscription(durable, (route,))
    for stream in ("LOYALTY.X", "MY STREAM", "*"):
        with pytest.raises(TopologyError, match="stream name"):
            Stream(stream, ("loyalty.>",))
    assert Subscription("loyalty-points_2", (route,)).durable == "loyalty-points_2"


def test_the_reference_services_declarations_hold() -> None:
    from booking.topology import TOPOLOGY

    assert TOPOLOGY.stream == BOOKING
    payments, inventory, timeouts = TOPOLOGY.subscriptions
    assert (payments.stream, payments.subjects) == ("PAYMENT", ["payment.failed", "payment.succeeded"])
    assert (inventory.stream, inventory.subjects) == ("INVENTORY", ["inventory.reservation_failed"])
    assert (timeouts.stream, timeouts.subjects) == ("BOOKING", ["booking.created"])
    assert [s.subject for s in TOPOLOGY.serves] == ["cmd.booking.create", "cmd.booking.cancel"]


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


def test_a_command_answers_only_with_the_facts_it_declares() -> None:
    create = Serves(commands_pb2.CreateBookingCommand, emits=(booking_events.BookingCreated,))
    env = create.wrap(
        booking_events.BookingCreated(booking_id="b-1"),
        source="booking",
        correlation_id="wf-1",
        causation_id="c-1",
    )
    assert (env.subject, env.correlation_id, env.causation_id) == ("booking.created", "wf-1", "c-1")
    with pytest.raises(UndeclaredEmit, match=r"command choreo\.booking\.v1\.CreateBookingCommand emits"):
        create.wrap(
            booking_events.BookingCancelled(booking_id="b-1"),
            source="booking",
            correlation_id="",
            causation_id="",
        )
