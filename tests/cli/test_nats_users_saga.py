"""The saga's NATS permissions (issue 12): the inventory user and the new durables, commands and facts.

Run as ``choreo up`` runs nats-server (the same auth.conf as Kubernetes). Each user
does what its service does in the saga (the runtime's JetStream API calls, as that
user, with no permission error), and every other user is refused each durable that
is not its own, its dead-letter subject, and the facts it does not own.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from choreo.booking.v1 import commands_pb2
from choreo.bus import ensure_stream
from choreo.commands import CommandServer
from choreo.contract import command_options, fact_stream, fact_subject
from choreo.dlq import copy_to_dlq, dlq_subject
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.pull import PullReader
from choreo.topology import Stream
from choreoctl.stack.natsusers import SERVICE_USERS, USERS, packaged_config
from choreoctl.stack.services import SERVICES
from tests.cli.conftest import Connect
from tests.cli.test_nats_users_notification_analytics import durable_reads, refused
from tests.natssession import Session
from tests.streams import BOOKING, BOOKING_CANCELLED, BOOKING_CREATED, DLQ, PAYMENT

INVENTORY = Stream(fact_stream(inventory_events.InventoryReserved), ("inventory.>",))
RESERVED = fact_subject(inventory_events.InventoryReserved)
REFUSED = fact_subject(inventory_events.InventoryReservationFailed)
RELEASED = fact_subject(inventory_events.InventoryReleased)
REFUNDED = fact_subject(payment_events.PaymentRefunded)
CANCEL = command_options(commands_pb2.CancelBookingCommand)
#: The saga's durables: (stream, durable) -> the only user that may use it.
DURABLES = {
    ("BOOKING", "inventory"): "inventory",
    ("BOOKING", "booking-timeouts"): "booking",
    ("INVENTORY", "booking-inventory"): "booking",
    ("INVENTORY", "payment-inventory"): "payment",
}
ACTIONS = ("CREATE", "MSG.NEXT", "DELETE", "DURABLE.CREATE", "INFO")


def test_the_names_are_the_designs() -> None:
    assert (INVENTORY.name, RESERVED, REFUSED, RELEASED) == (
        "INVENTORY",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.released",
    )
    assert (REFUNDED, CANCEL.subject, CANCEL.queue) == ("payment.refunded", "cmd.booking.cancel", "booking")
    assert set(SERVICE_USERS) == set(SERVICES) and "inventory" in USERS
    for config in ("auth.conf", "choreo-up.conf"):
        text = packaged_config(config)
        for user in SERVICE_USERS:
            line = f"{{ user: {user}, password: ${user.upper()}_NATS_PASSWORD, "
            assert f"{line}permissions: ${user.upper()}_PERMISSIONS }}" in text, (config, user)


async def provisioned(connect: Connect) -> dict[str, Session]:
    """Every service user, each stream provisioned by its owner with one fact per saga subject."""
    sessions = {user: await connect(user) for user in SERVICE_USERS}
    for owner, stream, subjects in (
        ("booking", BOOKING, [BOOKING_CREATED, BOOKING_CANCELLED]),
        ("payment", PAYMENT, [REFUNDED]),
        ("inventory", INVENTORY, [RESERVED, REFUSED, RELEASED]),
    ):
        js = sessions[owner].nc.jetstream(timeout=2)
        await ensure_stream(js, stream)
        await ensure_stream(js, DLQ, update=owner == "booking")
        for subject in subjects:
            ack = await js.publish(subject, subject.encode(), headers={"Nats-Msg-Id": uuid.uuid4().hex})
            assert ack.stream == stream.name
    return sessions


async def test_inventory_works_under_its_permissions(connect: Connect) -> None:
    sessions = await provisioned(connect)
    inventory = sessions["inventory"]
    js = inventory.nc.jetstream(timeout=2)
    facts = await durable_reads(inventory, "BOOKING", "inventory", [BOOKING_CREATED, BOOKING_CANCELLED])
    assert [m.data for m in facts] == [BOOKING_CREATED.encode(), BOOKING_CANCELLED.encode()]
    # Recovery by replay of its own stream.
    config = ConsumerConfig(name="inventory-recovery-1", ack_policy=AckPolicy.NONE, mem_storage=True)
    await js.add_consumer(INVENTORY.name, config)
    reader = PullReader(inventory.nc, INVENTORY.name, "inventory-recovery-1", batch=10)
    await reader.start()
    replayed: list[Msg] = await reader.next_batch(10)
    await reader.stop()
    await js.delete_consumer(INVENTORY.name, "inventory-recovery-1")
    assert [m.subject for m in replayed] == [RESERVED, REFUSED, RELEASED]
    assert dlq_subject("BOOKING", "inventory") == "dlq.booking.inventory"
    await copy_to_dlq(js, facts[0], "inventory", "test")
    await inventory.nc.flush()
    await asyncio.sleep(0.2)
    assert inventory.errors == []


async def test_booking_and_payment_consume_the_saga_under_their_permissions(connect: Connect) -> None:
    sessions = await provisioned(connect)
    booking, payment = sessions["booking"], sessions["payment"]
    [failed] = await durable_reads(booking, "INVENTORY", "booking-inventory", [REFUSED])
    [reserved] = await durable_reads(payment, "INVENTORY", "payment-inventory", [RESERVED])
    assert (failed.subject, reserved.subject) == (REFUSED, RESERVED)
    # payment's durable also filters booking.cancelled: the filters are no ACL matter.
    created, cancelled = await durable_reads(
        payment, "BOOKING", "payment", [BOOKING_CREATED, BOOKING_CANCELLED]
    )
    assert (created.subject, cancelled.subject) == (BOOKING_CREATED, BOOKING_CANCELLED)
    # booking-timeouts: a fact not yet due is nak'ed with a delay and comes back then.
    bjs = booking.nc.jetstream(timeout=2)
    timeouts = ConsumerConfig(
        durable_name="booking-timeouts", ack_policy=AckPolicy.EXPLICIT, filter_subjects=[BOOKING_CREATED]
    )
    await bjs.add_consumer("BOOKING", timeouts)
    await bjs.consumer_info("BOOKING", "booking-timeouts")
    reader = PullReader(booking.nc, "BOOKING", "booking-timeouts", batch=10)
    await reader.start()
    try:
        [first] = await reader.next_batch(10)
        await first.nak(delay=0.3)
        again: list[Msg] = []
        for _ in range(20):
            again = await reader.next_batch(10)
            if again:
                break
        [due] = again
        assert (due.subject, due.metadata.num_delivered) == (BOOKING_CREATED, 2)
        await due.ack()
    finally:
        await reader.stop()
    await copy_to_dlq(bjs, failed, "booking-inventory", "test")
    await copy_to_dlq(bjs, due, "booking-timeouts", "test")
    await copy_to_dlq(payment.nc.jetstream(timeout=2), reserved, "payment-inventory", "test")
    for session in (booking, payment):
        await session.nc.flush()
    await asyncio.sleep(0.2)
    assert booking.errors == [] and payment.errors == []
    assert (await bjs.stream_info(DLQ.name)).state.messages == 3


async def test_the_gateway_cancels_through_booking_and_projects_inventory(connect: Connect) -> None:
    sessions = await provisioned(connect)
    booking, gateway = sessions["booking"], sessions["gateway"]

    async def answer(msgs: list[Msg]) -> list[bytes]:
        return [b"cancelled:" + m.data for m in msgs]

    server = CommandServer(booking.nc, CANCEL.subject, CANCEL.queue, answer)  # type: ignore[arg-type]
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.ready.wait(), 5)
        reply = await gateway.nc.request(CANCEL.subject, b"b-1", timeout=5)
        assert reply.data == b"cancelled:b-1"
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
    gjs = gateway.nc.jetstream(timeout=2)
    assert (await gjs.stream_info(INVENTORY.name)).state.messages == 3
    config = ConsumerConfig(name="gateway-i1", ack_policy=AckPolicy.NONE, mem_storage=True)
    await gjs.add_consumer(INVENTORY.name, config)
    reader = PullReader(gateway.nc, INVENTORY.name, "gateway-i1", batch=3)
    await reader.start()
    delivered: list[Msg] = await reader.next_batch(3)
    await reader.stop()
    assert [m.subject for m in delivered] == [RESERVED, REFUSED, RELEASED]
    await copy_to_dlq(gjs, delivered[0], "gateway-projection", "unreadable")
    await gjs.delete_consumer(INVENTORY.name, "gateway-i1")
    await gateway.nc.flush()
    await asyncio.sleep(0.2)
    assert gateway.errors == [] and booking.errors == []
    assert await refused(gateway, [RESERVED, REFUNDED, "$JS.API.STREAM.CREATE.INVENTORY"]) == []


async def test_each_saga_durable_and_its_dead_letters_are_its_owners_only(connect: Connect) -> None:
    for user in (*SERVICE_USERS, "operator"):
        session = await connect(user)
        subjects = []
        for (stream, durable), owner in DURABLES.items():
            if user == owner:
                continue
            # The operator may look a durable up (CONSUMER.INFO), as it may every consumer.
            actions = [a for a in ACTIONS if not (user == "operator" and a == "INFO")]
            subjects += [f"$JS.API.CONSUMER.{a}.{stream}.{durable}" for a in actions]
            subjects.append(dlq_subject(stream, durable))
        assert await refused(session, subjects) == [], user


async def test_only_their_owners_publish_the_saga_facts_and_send_the_cancel(connect: Connect) -> None:
    may_cancel = {"gateway"}
    for user in (*SERVICE_USERS, "operator"):
        session = await connect(user)
        forged = []
        if user not in ("inventory", "operator"):  # the operator re-drives dead letters
            forged += [RESERVED, REFUSED, RELEASED, "inventory.capacity_set"]
        if user not in ("payment", "operator"):
            forged.append(REFUNDED)
        if user not in may_cancel:
            forged.append(CANCEL.subject)
        if user != "inventory":
            forged += ["$JS.API.STREAM.CREATE.INVENTORY", "$JS.API.STREAM.UPDATE.INVENTORY"]
        if user != "gateway":
            forged.append("dlq.inventory.gateway-projection")
        assert await refused(session, forged) == [], user


async def test_inventory_is_refused_what_belongs_to_others(connect: Connect) -> None:
    inventory = await connect("inventory")
    others = [
        "booking.cancelled",
        "payment.succeeded",
        "notification.sent",
        "cmd.booking.create",
        "query.analytics.booking_stats",
        "dlq.booking.payment",
        "$JS.API.STREAM.CREATE.BOOKING",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.STREAM.DELETE.INVENTORY",
        "$JS.API.STREAM.PURGE.INVENTORY",
        "$JS.API.CONSUMER.MSG.NEXT.BOOKING.payment",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.notification",
        "$JS.API.CONSUMER.CREATE.BOOKING.inventory-x",
        "$JS.API.CONSUMER.MSG.NEXT.PAYMENT.booking",
    ]
    assert await refused(inventory, others) == []
    spied = ("booking.>", "cmd.booking.>", "_INBOX.>", "_INBOX_booking.>", "_INBOX_gateway.>")
    for subject in spied:
        await inventory.nc.subscribe(subject)
    await inventory.nc.flush()
    for subject in spied:
        assert await inventory.denied(f'"{subject}"'), f"inventory may subscribe to {subject}"
    # It serves no request: nobody may make it answer into JetStream's API.
    for user in ("payment", "inventory", "notification", "analytics"):
        session = await connect(user)
        await session.nc.subscribe(CANCEL.subject, queue=CANCEL.queue)
        await session.nc.flush()
        assert await session.denied(f'"{CANCEL.subject}"'), f"{user} may serve the cancel command"
