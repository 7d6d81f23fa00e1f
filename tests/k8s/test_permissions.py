"""NATS permissions, as auth.conf ships them, against a real nats-server and the real services.

The services complete bookings (every API call they make is allowed: the server
logs no violation), while each service's user is refused what belongs to others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import SecretStr

from booking.topology import PAYMENTS
from choreo import bus
from choreo.analytics.v1 import queries_pb2
from choreo.booking.v1 import commands_pb2
from choreo.bus import ensure_stream, stream_config
from choreo.commands import H_DEADLINE, CommandServer
from choreo.consumer import EventConsumer
from choreo.contract import command_options, fact_stream, fact_subject
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.natsidentity import inbox_prefix
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.settings import ServiceSettings
from choreo.topology import Stream
from tests.k8s import client
from tests.k8s.localpod import LocalPod
from tests.k8s.manifests import SERVICES, Manifests
from tests.k8s.natsproc import ConfiguredNats
from tests.k8s.stack import (
    MailSink,
    mail_sink,
    nats_passwords,
    notification_smtp,
    single_nats,
    sqlite_urls,
    user_passwords,
)
from tests.natssession import Session
from tests.streams import BOOKING, DLQ, PAYMENT, STREAMS
from tests.support import poll

#: How nats-server logs a refused publish or subscription.
VIOLATION = re.compile(r"(Publish|Subscription) Violation")
#: notification's stream and fact, and analytics' query, as the contract names them.
NOTIFICATION_SENT = fact_subject(notification_events.NotificationSent)
NOTIFICATION = Stream(fact_stream(notification_events.NotificationSent), ("notification.>",))
STATS_QUERY = command_options(queries_pb2.BookingStatsQuery)
#: inventory's stream and facts (issue 12's contract), and the cancel command.
INVENTORY_RESERVED = fact_subject(inventory_events.InventoryReserved)
INVENTORY_RELEASED = fact_subject(inventory_events.InventoryReleased)
INVENTORY = Stream(fact_stream(inventory_events.InventoryReserved), ("inventory.>",))
CANCEL_BOOKING = command_options(commands_pb2.CancelBookingCommand)
#: The saga's durables (issue 12's design): name -> (stream, the only user that may use it).
SAGA_DURABLES = {
    "inventory": ("BOOKING", "inventory"),
    "booking-inventory": ("INVENTORY", "booking"),
    "booking-timeouts": ("BOOKING", "booking"),
    "payment-inventory": ("INVENTORY", "payment"),
}


@pytest.fixture
def dev_nats(
    overlays: dict[str, Manifests], tmp_path: Path
) -> Iterator[tuple[ConfiguredNats, dict[str, str]]]:
    dev = overlays["dev"]
    passwords = nats_passwords(dev)
    with single_nats(dev, tmp_path, passwords) as node:
        yield node, user_passwords(dev, passwords)


@pytest.fixture
async def connect(dev_nats: tuple[ConfiguredNats, dict[str, str]]) -> AsyncIterator[object]:
    node, passwords = dev_nats
    sessions: list[Session] = []

    async def as_user(user: str, prefix: str | None = None) -> Session:
        session = Session(nc=NATS())

        async def on_error(exc: Exception) -> None:
            session.errors.append(str(exc))

        session.nc = await nats.connect(
            node.url,
            user=user,
            password=passwords[user],
            error_cb=on_error,
            allow_reconnect=False,
            inbox_prefix=prefix or inbox_prefix(user),
        )
        sessions.append(session)
        return session

    yield as_user
    for session in sessions:
        await session.nc.close()


async def test_booking_cannot_publish_payment_facts(  # type: ignore[no-untyped-def]
    connect, dev_nats: tuple[ConfiguredNats, dict[str, str]]
) -> None:
    booking: Session = await connect("booking")
    await booking.nc.publish("payment.succeeded", b"forged")
    await booking.nc.flush()
    assert await booking.denied('"payment.succeeded"')
    # The server logs it the way the workflow test looks for.
    logged = [line for line in dev_nats[0].log_text().splitlines() if VIOLATION.search(line)]
    assert any(
        'user:booking" - Publish Violation - Subject "payment.succeeded"' in line for line in logged
    ), logged


async def test_each_user_is_refused_what_belongs_to_others(connect) -> None:  # type: ignore[no-untyped-def]
    booking: Session = await connect("booking")
    payment: Session = await connect("payment")
    gateway: Session = await connect("gateway")
    notification: Session = await connect("notification")
    analytics: Session = await connect("analytics")
    inventory: Session = await connect("inventory")
    attempts = [
        (payment, "booking.created"),
        (gateway, "booking.created"),
        (gateway, "payment.failed"),
        (booking, NOTIFICATION_SENT),
        (gateway, NOTIFICATION_SENT),
        (analytics, NOTIFICATION_SENT),
        (booking, STATS_QUERY.subject),
        (payment, STATS_QUERY.subject),
        (booking, "dlq.booking.payment"),
        (payment, "cmd.booking.create"),
        # JetStream API: another service's stream, another's durable consumer, deleting a stream.
        (booking, "$JS.API.STREAM.CREATE.PAYMENT"),
        (booking, "$JS.API.STREAM.DELETE.BOOKING"),
        (gateway, "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment"),
        (payment, "$JS.API.CONSUMER.MSG.NEXT.PAYMENT.booking"),
        (gateway, "$JS.API.STREAM.PURGE.BOOKING"),
        # The gateway's consumer rights cover any name on its streams (wildcards match whole
        # tokens), except the other services' durables: the deny list.
        (gateway, "$JS.API.CONSUMER.DELETE.BOOKING.payment"),
        (gateway, "$JS.API.CONSUMER.CREATE.BOOKING.payment"),
        (gateway, "$JS.API.CONSUMER.MSG.NEXT.BOOKING.payment"),
        (gateway, "$JS.API.CONSUMER.CREATE.PAYMENT.booking"),
        (gateway, "$JS.API.CONSUMER.DELETE.PAYMENT.booking"),
        (gateway, "$JS.API.CONSUMER.MSG.NEXT.PAYMENT.booking"),
        # The new durables on BOOKING are out of reach of the stream's owner and of the gateway.
        (booking, "$JS.API.CONSUMER.DELETE.BOOKING.notification"),
        (booking, "$JS.API.CONSUMER.CREATE.BOOKING.analytics"),
        (gateway, "$JS.API.CONSUMER.DELETE.BOOKING.analytics"),
        (gateway, "$JS.API.CONSUMER.MSG.NEXT.BOOKING.notification"),
        (notification, "$JS.API.CONSUMER.DELETE.BOOKING.analytics"),
        (analytics, "$JS.API.CONSUMER.DELETE.BOOKING.notification"),
        (analytics, "$JS.API.CONSUMER.DELETE.BOOKING.payment"),
        (payment, "$JS.API.STREAM.CREATE.NOTIFICATION"),
        (gateway, "$JS.API.STREAM.PURGE.NOTIFICATION"),
        # The saga: only inventory states what was reserved or released, only booking cancels,
        # only payment refunds; only the gateway sends the cancel command.
        (booking, INVENTORY_RESERVED),
        (payment, INVENTORY_RELEASED),
        (gateway, INVENTORY_RESERVED),
        (analytics, INVENTORY_RESERVED),
        (inventory, "booking.cancelled"),
        (inventory, "payment.refunded"),
        (booking, "payment.refunded"),
        (payment, CANCEL_BOOKING.subject),
        (inventory, CANCEL_BOOKING.subject),
        (inventory, "$JS.API.STREAM.CREATE.PAYMENT"),
        (booking, "$JS.API.STREAM.CREATE.INVENTORY"),
        (gateway, "$JS.API.STREAM.PURGE.INVENTORY"),
        (payment, "$JS.API.STREAM.DELETE.INVENTORY"),
    ]
    # Each saga durable is out of reach of every other user (the stream's owner and the gateway,
    # whose consumer rights cover any name on their streams, included).
    sessions = {"booking": booking, "payment": payment, "gateway": gateway, "inventory": inventory}
    for name, (stream, owner) in SAGA_DURABLES.items():
        for user, session in sessions.items():
            if user != owner:
                attempts += [
                    (session, f"$JS.API.CONSUMER.DELETE.{stream}.{name}"),
                    (session, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
                ]
    for session, subject in attempts:
        await session.nc.publish(subject, b"{}")
    for session in (booking, payment, gateway, notification, analytics, inventory):
        await session.nc.flush()
    for session, subject in attempts:
        assert await session.denied(f'"{subject}"'), f"{subject} was not refused: {session.errors}"
    await payment.nc.subscribe("cmd.booking.create")
    await gateway.nc.subscribe("booking.>")
    # Nobody else may take (and answer) the gateway's stats queries.
    await payment.nc.subscribe(STATS_QUERY.subject, queue=STATS_QUERY.queue)
    await notification.nc.subscribe(STATS_QUERY.subject)
    assert await payment.denied('"cmd.booking.create"')
    assert await gateway.denied('"booking.>"')
    assert await payment.denied(f'"{STATS_QUERY.subject}"')
    assert await notification.denied(f'"{STATS_QUERY.subject}"')
    # Nobody but booking may take the cancel commands.
    await inventory.nc.subscribe(CANCEL_BOOKING.subject, queue=CANCEL_BOOKING.queue)
    assert await inventory.denied(f'"{CANCEL_BOOKING.subject}"')


async def test_inventory_publishes_only_its_own_facts(connect) -> None:  # type: ignore[no-untyped-def]
    """inventory provisions INVENTORY, publishes its facts into it and consumes BOOKING through its
    durable; booking and payment consume INVENTORY through theirs, booking keeps its timeouts
    durable on its own stream, and the gateway reads INVENTORY into the traces. inventory may
    publish nothing another service owns: no booking or payment fact, no command, no query."""
    inventory: Session = await connect("inventory")
    booking: Session = await connect("booking")
    payment: Session = await connect("payment")
    gateway: Session = await connect("gateway")
    await ensure_stream(booking.nc.jetstream(timeout=2), BOOKING)
    js = inventory.nc.jetstream(timeout=2)
    await ensure_stream(js, INVENTORY)
    await ensure_stream(js, DLQ)
    for subject in (INVENTORY_RESERVED, INVENTORY_RELEASED):
        ack = await js.publish(subject, b"x", headers={"Nats-Msg-Id": uuid.uuid4().hex})
        assert ack.stream == INVENTORY.name
    await inventory.nc.publish("dlq.booking.inventory", b"{}")
    await inventory.nc.flush()
    # Each saga durable, provisioned, read and deleted by its own user.
    users = {"inventory": inventory, "booking": booking, "payment": payment}
    for name, (stream, owner) in SAGA_DURABLES.items():
        ujs = users[owner].nc.jetstream(timeout=2)
        await ujs.add_consumer(stream, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT))
        await ujs.consumer_info(stream, name)
    for session in users.values():
        await session.nc.flush()
    assert inventory.errors == [] and booking.errors == [] and payment.errors == []
    forged = [
        "booking.created",
        "booking.cancelled",
        "payment.succeeded",
        "payment.refunded",
        NOTIFICATION_SENT,
        "cmd.booking.create",
        CANCEL_BOOKING.subject,
        STATS_QUERY.subject,
        "dlq.booking.payment",
        "dlq.inventory.booking-inventory",
        "$JS.API.STREAM.CREATE.BOOKING",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.STREAM.PURGE.BOOKING",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "$JS.API.CONSUMER.DELETE.BOOKING.booking-timeouts",
        "$JS.API.CONSUMER.DELETE.INVENTORY.payment-inventory",
    ]
    for subject in forged:
        await inventory.nc.publish(subject, b"{}")
    await inventory.nc.flush()
    for subject in forged:
        assert await inventory.denied(f'"{subject}"'), f"inventory may publish {subject}"
    # The gateway reads INVENTORY into each booking's trace, as it reads BOOKING.
    gjs = gateway.nc.jetstream(timeout=2)
    assert (await gjs.stream_info(INVENTORY.name)).state.messages == 2
    await gjs.add_consumer(INVENTORY.name, ConsumerConfig(name="gateway-test", ack_policy=AckPolicy.NONE))
    await gjs.delete_consumer(INVENTORY.name, "gateway-test")
    assert gateway.errors == []


async def test_notification_publishes_only_its_own_facts(connect) -> None:  # type: ignore[no-untyped-def]
    """notification provisions NOTIFICATION and publishes NotificationSent into it, and nothing
    that another service owns: no booking or payment fact, no command, no query."""
    notification: Session = await connect("notification")
    js = notification.nc.jetstream(timeout=2)
    await ensure_stream(js, NOTIFICATION)
    await ensure_stream(js, DLQ)
    ack = await js.publish(NOTIFICATION_SENT, b"x", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    assert ack.stream == NOTIFICATION.name
    await notification.nc.publish("dlq.booking.notification", b"{}")
    await notification.nc.flush()
    assert notification.errors == []
    forged = [
        "booking.created",
        "booking.confirmed",
        "booking.cancelled",
        "payment.succeeded",
        "cmd.booking.create",
        STATS_QUERY.subject,
        "dlq.booking.payment",
        "$JS.API.STREAM.CREATE.BOOKING",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.STREAM.DELETE.NOTIFICATION",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "$JS.API.CONSUMER.DELETE.BOOKING.notification",
    ]
    for subject in forged:
        await notification.nc.publish(subject, b"{}")
    await notification.nc.flush()
    for subject in forged:
        assert await notification.denied(f'"{subject}"'), f"notification may publish {subject}"
    # The gateway reads NOTIFICATION into each booking's trace, as it reads BOOKING.
    gateway: Session = await connect("gateway")
    gjs = gateway.nc.jetstream(timeout=2)
    assert (await gjs.stream_info(NOTIFICATION.name)).state.messages == 1
    await gjs.add_consumer(NOTIFICATION.name, ConsumerConfig(name="gateway-test", ack_policy=AckPolicy.NONE))
    await gjs.delete_consumer(NOTIFICATION.name, "gateway-test")
    assert gateway.errors == []


async def test_analytics_publishes_nothing_but_its_answers(connect) -> None:  # type: ignore[no-untyped-def]
    """analytics answers the gateway's stats queries (one answer per request, on the requester's
    inbox), in its queue group only, and may publish nothing else but its own dead letters and the
    JetStream calls of its durable: no fact, no command, no query, no unsolicited reply."""
    analytics: Session = await connect("analytics")
    gateway: Session = await connect("gateway")
    booking: Session = await connect("booking")
    await ensure_stream(booking.nc.jetstream(timeout=2), BOOKING)

    async def answer(msgs: object) -> list[bytes]:
        return [b"stats" for _ in msgs]  # type: ignore[attr-defined]

    server = CommandServer(analytics.nc, STATS_QUERY.subject, STATS_QUERY.queue, answer)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.ready.wait(), 5)
        reply = await gateway.nc.request(STATS_QUERY.subject, b"", timeout=2)
        assert reply.data == b"stats"
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
    assert analytics.errors == [] and gateway.errors == []
    # Its durable on BOOKING, including deleting it to rebuild an empty database by replay.
    ajs = analytics.nc.jetstream(timeout=2)
    durable = ConsumerConfig(durable_name="analytics", ack_policy=AckPolicy.EXPLICIT)
    await ajs.add_consumer(BOOKING.name, durable)
    await ajs.consumer_info(BOOKING.name, "analytics")
    await ajs.delete_consumer(BOOKING.name, "analytics")
    await ensure_stream(ajs, DLQ)
    await analytics.nc.publish("dlq.booking.analytics", b"{}")
    await analytics.nc.flush()
    assert analytics.errors == []
    forged = [
        "booking.created",
        "payment.succeeded",
        NOTIFICATION_SENT,
        "cmd.booking.create",
        STATS_QUERY.subject,
        f"{inbox_prefix('gateway')}.forged",
        "dlq.booking.payment",
        "$JS.API.STREAM.CREATE.ANALYTICS",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.STREAM.PURGE.BOOKING",
        "$JS.API.CONSUMER.CREATE.BOOKING.replay",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "$JS.API.CONSUMER.DURABLE.CREATE.PAYMENT.analytics",
    ]
    for subject in forged:
        await analytics.nc.publish(subject, b"{}")
    await analytics.nc.flush()
    for subject in forged:
        assert await analytics.denied(f'"{subject}"'), f"analytics may publish {subject}"
    # Outside its queue group the query subject is refused (a lone subscriber would see every query).
    await analytics.nc.subscribe(STATS_QUERY.subject)
    assert await analytics.denied(f'"{STATS_QUERY.subject}"')


#: Each consumer's DLQ subject (``dlq.<stream>.<consumer>``), by the user that consumes.
DLQ_SUBJECTS = {
    "booking": ["dlq.payment.booking", "dlq.inventory.booking-inventory", "dlq.booking.booking-timeouts"],
    "payment": ["dlq.booking.payment", "dlq.inventory.payment-inventory"],
    "inventory": ["dlq.booking.inventory"],
    "notification": ["dlq.booking.notification"],
    "analytics": ["dlq.booking.analytics"],
    "gateway": [
        "dlq.booking.gateway-projection",
        "dlq.payment.gateway-projection",
        "dlq.notification.gateway-projection",
        "dlq.inventory.gateway-projection",
    ],
}


async def test_no_user_may_publish_into_another_consumers_dlq_subject(connect) -> None:  # type: ignore[no-untyped-def]
    """A forged dead letter in another consumer's DLQ subject is refused: only a consumer's own
    user may copy into ``dlq.<stream>.<consumer>``."""
    for user, own in DLQ_SUBJECTS.items():
        session: Session = await connect(user)
        others = [s for u, subjects in DLQ_SUBJECTS.items() if u != user for s in subjects]
        others += ["dlq.payment.nobody", "dlq.booking.nobody", "dlq.inventory.nobody", "dlq.other.x"]
        for subject in others:
            await session.nc.publish(subject, b"forged")
        await session.nc.flush()
        for subject in others:
            assert await session.denied(f'"{subject}"'), f"{user} may publish on {subject}"
        refused_before = len(session.errors)
        for subject in own:
            await session.nc.publish(subject, b"{}")
        await session.nc.flush()
        await asyncio.sleep(0.2)
        assert len(session.errors) == refused_before, f"{user} refused its own DLQ subject: {session.errors}"


async def test_no_user_may_read_another_users_inbox(  # type: ignore[no-untyped-def]
    connect, dev_nats: tuple[ConfiguredNats, dict[str, str]]
) -> None:
    """The gateway's replies (publish acks, pull deliveries: payment tokens) are out of the other
    users' reach. Before per-user inboxes every user could subscribe to ``_INBOX.>`` and read them."""
    node, passwords = dev_nats
    spy: Session = await connect("payment")
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append(msg.subject)

    for subject in ("_INBOX.>", "_INBOX_gateway.>", ">"):
        await spy.nc.subscribe(subject, cb=record)
    await spy.nc.flush()
    # The gateway connects as it does in production, and gets JetStream answers on its inbox.
    settings = ServiceSettings(
        service_name="gateway",
        nats_url=node.url,
        nats_user="gateway",
        nats_password=SecretStr(passwords["gateway"]),
    )
    gateway = await bus.connect(settings, allow_reconnect=False)
    try:
        owner: Session = await connect("booking")
        await ensure_stream(owner.nc.jetstream(), BOOKING)
        info = await gateway.jetstream(timeout=2).stream_info("BOOKING")
        assert info.config.name == "BOOKING"
    finally:
        await gateway.close()
    await asyncio.sleep(0.2)
    assert seen == [], f"payment read the gateway's inbox: {seen}"
    for subject in ("_INBOX.>", "_INBOX_gateway.>", ">"):
        assert await spy.denied(f'"{subject}"'), f"payment may subscribe to {subject}"
    # Every user may subscribe under its own prefix, and under nobody else's.
    for user in SERVICES:
        session: Session = await connect(user)
        await session.nc.subscribe(f"{inbox_prefix(user)}.>")
        await session.nc.flush()
        assert not await session.denied(f'"{inbox_prefix(user)}.>"', timeout=0.3), session.errors
        for other in (*SERVICES, "operator"):
            if other != user:
                await session.nc.subscribe(f"{inbox_prefix(other)}.>")
        await session.nc.subscribe("_INBOX.>")
        await session.nc.flush()
        for other in (*SERVICES, "operator"):
            if other != user:
                assert await session.denied(f'"{inbox_prefix(other)}.>"'), f"{user} reads {other}'s inbox"
        assert await session.denied('"_INBOX.>"'), f"{user} may subscribe to _INBOX.>"


async def test_each_user_may_provision_only_its_own_stream(connect) -> None:  # type: ignore[no-untyped-def]
    booking: Session = await connect("booking")
    js = booking.nc.jetstream(timeout=1.0)
    await ensure_stream(js, BOOKING)
    await ensure_stream(js, DLQ)
    ack = await js.publish("booking.created", b"x", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    assert ack.stream == "BOOKING"
    with pytest.raises(nats.errors.TimeoutError):
        await ensure_stream(js, PAYMENT)
    assert await booking.denied('"$JS.API.STREAM.INFO.PAYMENT"')


async def test_the_gateway_cannot_make_booking_reply_into_jetstreams_api(connect) -> None:  # type: ignore[no-untyped-def]
    """Booking's user may answer each request it gets (``allow_responses``), whatever its deny list
    says, on the reply subject the requester chose. The gateway's user named
    ``$JS.API.STREAM.DELETE.BOOKING`` (or a purge, or a fact subject) as the reply of a command past
    its deadline: booking's empty rejection deleted the stream."""
    booking: Session = await connect("booking")
    payment: Session = await connect("payment")
    gateway: Session = await connect("gateway")
    for owner, stream in ((booking, BOOKING), (payment, PAYMENT), (booking, DLQ)):
        await ensure_stream(owner.nc.jetstream(timeout=2), stream)
    await booking.nc.jetstream().publish("booking.created", b"kept")
    await gateway.nc.jetstream().publish("dlq.booking.gateway-projection", b"kept", stream="DLQ")

    async def answer(msgs: object) -> list[bytes]:
        return [b"" for _ in msgs]  # type: ignore[attr-defined]

    server = CommandServer(booking.nc, "cmd.booking.create", "booking", answer)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.ready.wait(), 5)
        # Past its deadline (an empty rejection), then executed (the handler's answer).
        await gateway.nc.publish(
            "cmd.booking.create", b"", reply="$JS.API.STREAM.DELETE.BOOKING", headers={H_DEADLINE: "1"}
        )
        for target in ("$JS.API.STREAM.PURGE.DLQ", "payment.succeeded"):
            await gateway.nc.publish("cmd.booking.create", b"", reply=target)
        await gateway.nc.flush()
        reply = await gateway.nc.request("cmd.booking.create", b"", timeout=2)
        assert reply.data == b""  # a true request still gets its answer
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
    js = booking.nc.jetstream(timeout=2)
    assert (await js.stream_info("BOOKING")).state.messages == 1
    assert (await js.stream_info("DLQ")).state.messages == 1
    assert (await payment.nc.jetstream(timeout=2).stream_info("PAYMENT")).state.messages == 0


async def test_only_booking_may_update_the_dlq(connect) -> None:  # type: ignore[no-untyped-def]
    """Every service provisions the DLQ; an update may shrink it, move its subjects or seal it for
    good, and every consumer's dead letters would then be refused. The gateway's and payment's
    users could; now they only create it when missing, and booking
    (``open_runtime(owns_dlq=True)``) updates it."""
    booking: Session = await connect("booking")
    await ensure_stream(booking.nc.jetstream(timeout=2), DLQ)
    wanted = stream_config(DLQ)
    hostile = dataclasses.replace(wanted, subjects=["nothing.here"], max_msgs=1, sealed=True)
    for user in ("gateway", "payment", "inventory", "notification", "analytics"):
        session: Session = await connect(user)
        js = session.nc.jetstream(timeout=1)
        with pytest.raises(nats.errors.TimeoutError):
            await js.update_stream(hostile)
        assert await session.denied('"$JS.API.STREAM.UPDATE.DLQ"'), f"{user} may update the DLQ"
        # Starting against a DLQ unlike this release's is no violation: it is left as it is.
        refused = len(session.errors)
        await ensure_stream(js, DLQ, replicas=1, limits=None)
        await booking.nc.jetstream().update_stream(dataclasses.replace(wanted, max_msg_size=1024))
        await ensure_stream(js, DLQ)
        assert len(session.errors) == refused, session.errors
        assert (await js.stream_info("DLQ")).config.max_msg_size == 1024
        await ensure_stream(booking.nc.jetstream(), DLQ, update=True)
    info = await booking.nc.jetstream().stream_info("DLQ")
    assert info.config.subjects == ["dlq.>"] and not info.config.sealed
    assert info.config.max_msg_size == wanted.max_msg_size


async def test_bookings_durable_of_the_previous_release_is_updated_to_its_routes_filters(connect) -> None:  # type: ignore[no-untyped-def]
    """The previous release made booking's durable on PAYMENT with the filter ``payment.>``; this one
    derives ``payment.failed`` and ``payment.succeeded`` from its routes. Under booking's permissions
    the update goes through the same API subject (``CONSUMER.DURABLE.CREATE.PAYMENT.booking``), the
    server accepts the new filters on the existing durable, and nothing it held back is lost."""
    booking: Session = await connect("booking")
    payment: Session = await connect("payment")
    await ensure_stream(payment.nc.jetstream(timeout=2), PAYMENT)
    for i in range(3):
        await payment.nc.jetstream().publish("payment.succeeded", b"%d" % i)
    js = booking.nc.jetstream(timeout=2)
    consumer = EventConsumer(
        js=js,
        engine=None,  # type: ignore[arg-type]  # provisioning only
        stream=PAYMENTS.stream,
        durable=PAYMENTS.durable,
        subjects=PAYMENTS.subjects,
        routes=PAYMENTS.routes,
        source="booking",
    )
    previous: ConsumerConfig = dataclasses.replace(consumer.config(), filter_subjects=["payment.>"])
    await js.add_consumer(PAYMENT.name, previous)
    await consumer.provision()
    info = await js.consumer_info(PAYMENT.name, PAYMENTS.durable)
    assert info.config.filter_subjects == ["payment.failed", "payment.succeeded"]
    assert info.num_pending == 3
    assert booking.errors == []


async def test_unknown_user_and_wrong_password_are_refused(
    dev_nats: tuple[ConfiguredNats, dict[str, str]],
) -> None:
    node, passwords = dev_nats
    for user, password in (("booking", "wrong"), ("admin", passwords["booking"]), (None, None)):
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(
                node.url, user=user, password=password, allow_reconnect=False, max_reconnect_attempts=0
            )


@pytest.mark.slow
async def test_services_work_under_their_permissions(overlays: dict[str, Manifests], tmp_path: Path) -> None:
    dev = overlays["dev"]
    passwords = nats_passwords(dev)
    with single_nats(dev, tmp_path / "nats", passwords) as node, mail_sink(dev, tmp_path / "mail") as sink:
        pods = [
            LocalPod(
                dev,
                service,
                tmp_path / service,
                secrets=passwords,
                replace={
                    f"{service.upper()}_NATS_URL": node.url,
                    **sqlite_urls(dev, service, tmp_path / service),
                    **(notification_smtp(dev, sink)[0] if service == "notification" else {}),
                },
            )
            for service in SERVICES
        ]
        try:
            for pod in pods:
                pod.start()
            for pod in pods:
                pod.wait_probe("readinessProbe")
            gateway = pods[-1]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}") as channel:
                stub = client.stub(channel)
                created = [
                    (
                        token,
                        await client.create(stub, token, key=uuid.uuid4().hex, email=f"k8s{i}@choreo.test"),
                    )
                    for i, token in enumerate(("tok_visa", "tok_chargeDeclined", "tok_visa"))
                ]
                for token, booking in created:
                    final = await client.wait_terminal(stub, booking.booking_id, timeout=30)
                    assert final.status == client.EXPECTED[token], final
                await _notified_and_counted(stub, sink, [booking for _, booking in created])
                await _saga_under_permissions(stub, dev)
            refused = [line for line in node.log_text().splitlines() if VIOLATION.search(line)]
            assert not refused, "a service was refused something it needs:\n" + "\n".join(refused)
            # The same booking user the service runs as is refused the payment service's subjects.
            violations: list[str] = []

            async def on_error(exc: Exception) -> None:
                violations.append(str(exc))

            users = user_passwords(dev, passwords)
            nc = await nats.connect(
                node.url,
                user="booking",
                password=users["booking"],
                error_cb=on_error,
                allow_reconnect=False,
                inbox_prefix=inbox_prefix("booking"),
            )
            # The payment user may read its own stream: the count must not move.
            owner = await nats.connect(
                node.url,
                user="payment",
                password=users["payment"],
                allow_reconnect=False,
                inbox_prefix=inbox_prefix("payment"),
            )
            try:
                payment_js = owner.jetstream()
                before = (await payment_js.stream_info("PAYMENT")).state.messages
                await nc.publish("payment.succeeded", b"forged")
                await nc.flush()
                _, refused = await poll(
                    lambda: any("payment.succeeded" in v for v in violations), bool, 5.0, 0.02
                )
                assert refused, violations
                assert (await payment_js.stream_info("PAYMENT")).state.messages == before
            finally:
                await nc.close()
                await owner.close()
            for pod in reversed(pods):
                assert pod.terminate() == 0, pod.log_tail()
        finally:
            for pod in pods:
                pod.kill()


async def _notified_and_counted(stub: object, sink: MailSink, bookings: list[gw.Booking]) -> None:
    """Under their permissions, notification emails each booking twice (received, settled) and
    publishes each email's fact into NOTIFICATION, which the gateway shows in the booking's trace;
    analytics answers the gateway's stats query with every booking."""
    ids = [b.booking_id for b in bookings]

    def mails() -> int:
        text = sink.log_text()
        return text.count("MESSAGE FOLLOWS") if all(i in text for i in ids) else 0

    _, sent = await poll(mails, lambda n: n >= 2 * len(ids), 30.0, 0.1)
    assert sent, f"the mail sink got {mails()} emails:\n{sink.log_text()[-2000:]}"

    async def notification_trace(booking_id: str) -> list[str]:
        trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking_id), timeout=5)  # type: ignore[attr-defined]
        return [e.event_type for e in trace.events if e.stream == "NOTIFICATION"]

    async def created() -> int:
        stats = await stub.GetBookingStats(gw.GetBookingStatsRequest(), timeout=5)  # type: ignore[attr-defined]
        return int(stats.bookings_created)

    loop = asyncio.get_running_loop()
    end = loop.time() + 15.0
    for booking_id in ids:
        events = await notification_trace(booking_id)
        while len(events) < 2 and loop.time() < end:
            await asyncio.sleep(0.1)
            events = await notification_trace(booking_id)
        assert events == [notification_events.NotificationSent.DESCRIPTOR.full_name] * 2, events
    count = await created()
    while count != len(ids) and loop.time() < end:
        await asyncio.sleep(0.1)
        count = await created()
    assert count == len(ids), f"analytics counted {count} bookings, not {len(ids)}"


#: What each path of the saga leaves in a booking's trace (the facts of BOOKING, PAYMENT and
#: INVENTORY, in causal order; notification's emails aside).
RESERVED_THEN_CANCELLED = [
    "choreo.booking.v1.BookingCreated",
    "choreo.inventory.v1.InventoryReserved",
    "choreo.payment.v1.PaymentSucceeded",
    "choreo.booking.v1.BookingConfirmed",
    "choreo.booking.v1.BookingCancelled",
]
#: After the user's cancellation, in either order: the refund and the release.
COMPENSATIONS = {"choreo.payment.v1.PaymentRefunded", "choreo.inventory.v1.InventoryReleased"}
SOLD_OUT = [
    "choreo.booking.v1.BookingCreated",
    "choreo.inventory.v1.InventoryReservationFailed",
    "choreo.booking.v1.BookingCancelled",
]


async def _saga_under_permissions(
    stub: gateway_pb2_grpc.BookingGatewayServiceAsyncStub, dev: Manifests
) -> None:
    """The inventory saga under the shipped permissions: a booking of a resource is reserved before
    payment charges it (payment's durable on INVENTORY); one asking for more units than a resource
    has is cancelled ``sold_out`` (booking's durable on INVENTORY) and never charged; the user's
    cancellation of the confirmed one (``cmd.booking.cancel``) is refunded and its units released,
    and the gateway shows every one of these facts in the bookings' traces."""
    env = dev.settings_env(dev.get("Deployment", "inventory"))
    capacity = int(str(env.get("INVENTORY_DEFAULT_CAPACITY", "100")))
    resource = f"room-{uuid.uuid4().hex[:8]}"
    reserved = await client.create(stub, "tok_visa", key=uuid.uuid4().hex, resource_id=resource, quantity=2)
    refused = await client.create(
        stub, "tok_visa", key=uuid.uuid4().hex, resource_id=resource, quantity=capacity + 1
    )
    confirmed = await client.wait_terminal(stub, reserved.booking_id, timeout=30)
    assert confirmed.status == gw.BOOKING_STATUS_CONFIRMED, confirmed
    assert (confirmed.resource_id, confirmed.quantity) == (resource, 2)
    sold_out = await client.wait_terminal(stub, refused.booking_id, timeout=30)
    assert sold_out.status == gw.BOOKING_STATUS_CANCELLED, sold_out
    assert sold_out.cancellation_reason == "sold_out" and not sold_out.payment_id, sold_out
    cancelled = await client.cancel(stub, reserved.booking_id)
    assert cancelled.status == gw.BOOKING_STATUS_CANCELLED, cancelled
    assert cancelled.cancellation_reason == "cancelled_by_user"

    async def trace(booking_id: str) -> list[str]:
        answer = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking_id), timeout=5)
        return [e.event_type for e in answer.events if e.stream != "NOTIFICATION"]

    loop = asyncio.get_running_loop()
    end = loop.time() + 30.0
    events = await trace(reserved.booking_id)
    while len(events) < len(RESERVED_THEN_CANCELLED) + len(COMPENSATIONS) and loop.time() < end:
        await asyncio.sleep(0.1)
        events = await trace(reserved.booking_id)
    assert events[: len(RESERVED_THEN_CANCELLED)] == RESERVED_THEN_CANCELLED, events
    assert sorted(events[len(RESERVED_THEN_CANCELLED) :]) == sorted(COMPENSATIONS), events
    assert await trace(refused.booking_id) == SOLD_OUT


@pytest.mark.slow
async def test_gateway_dead_letters_and_cleans_up_under_its_permissions(
    overlays: dict[str, Manifests], tmp_path: Path
) -> None:
    """The gateway's rarer calls: copying poison from each stream to the DLQ, and deleting its
    consumers when it stops. The booking and payment users publish one garbage fact each."""
    dev = overlays["dev"]
    passwords = nats_passwords(dev)
    users = user_passwords(dev, passwords)
    with single_nats(dev, tmp_path / "nats", passwords) as node:
        gateway = LocalPod(
            dev, "gateway", tmp_path / "gateway", secrets=passwords, replace={"GATEWAY_NATS_URL": node.url}
        )
        owners = {
            stream: await nats.connect(
                node.url,
                user=user,
                password=users[user],
                allow_reconnect=False,
                inbox_prefix=inbox_prefix(user),
            )
            for stream, user in ((BOOKING.name, "booking"), (PAYMENT.name, "payment"))
        }
        try:
            for stream, nc in owners.items():
                await ensure_stream(nc.jetstream(), STREAMS[stream])
            gateway.start()
            gateway.wait_probe("readinessProbe")
            for stream, nc in owners.items():
                # No CloudEvents headers: the projection cannot read it and dead-letters it.
                await nc.jetstream().publish(f"{stream.lower()}.created", b"\xff garbage")
            inspector = owners["BOOKING"].jetstream()  # booking may read the DLQ stream's info

            async def dead_lettered() -> set[str]:
                info = await inspector.stream_info("DLQ", subjects_filter="dlq.>")
                return set(info.state.subjects or {})

            expected = {"dlq.booking.gateway-projection", "dlq.payment.gateway-projection"}
            loop = asyncio.get_running_loop()
            end = loop.time() + 15
            seen = await dead_lettered()
            while seen != expected and loop.time() < end:
                await asyncio.sleep(0.05)
                seen = await dead_lettered()
            assert seen == expected
            assert gateway.terminate() == 0, gateway.log_tail()
            for stream, nc in owners.items():
                info = await nc.jetstream().stream_info(stream)
                assert info.state.consumer_count == 0, f"the gateway left a consumer on {stream}"
        finally:
            gateway.kill()
            for nc in owners.values():
                await nc.close()
        refused = [line for line in node.log_text().splitlines() if VIOLATION.search(line)]
        assert not refused, "the gateway was refused something it needs:\n" + "\n".join(refused)
