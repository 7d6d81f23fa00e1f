"""The notification and analytics users of ``choreo up`` (and Kubernetes: the same auth.conf).

Each may do what its service does (the JetStream API calls of the runtime, run
here as that user with no permission error), and is refused what belongs to
others; the other users are refused their durables. The analytics query goes
through the contract's subject and queue group, as the gateway asks it.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from choreo.analytics.v1 import queries_pb2
from choreo.bus import ensure_stream
from choreo.commands import CommandServer
from choreo.contract import command_options, fact_stream, fact_subject
from choreo.dlq import copy_to_dlq, dlq_subject
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.pull import PullReader
from choreo.topology import Stream
from tests.cli.conftest import Connect
from tests.natssession import Session
from tests.streams import BOOKING, BOOKING_CREATED, DLQ

NOTIFICATION = Stream(fact_stream(notification_events.NotificationSent), ("notification.>",))
NOTIFICATION_SENT = fact_subject(notification_events.NotificationSent)
STATS_QUERY = command_options(queries_pb2.BookingStatsQuery)


async def refused(session: Session, subjects: list[str]) -> list[str]:
    """The subjects of ``subjects`` the server did NOT refuse ``session`` to publish on."""
    for subject in subjects:
        await session.nc.publish(subject, b"{}")
    await session.nc.flush()
    return [s for s in subjects if not await session.denied(f'"{s}"')]


async def durable_reads(session: Session, stream: str, durable: str, subjects: list[str]) -> list[Msg]:
    """As the runtime does: creates the durable (DURABLE.CREATE), pulls, acks; returns the messages."""
    js = session.nc.jetstream(timeout=2)
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subjects=subjects)
    await js.add_consumer(stream, config)
    await js.consumer_info(stream, durable)
    reader = PullReader(session.nc, stream, durable, batch=10)
    await reader.start()
    try:
        msgs: list[Msg] = await reader.next_batch(10)
    finally:
        await reader.stop()
    for msg in msgs:
        await msg.ack()
    await session.nc.flush()
    return msgs


async def test_notification_works_under_its_permissions(connect: Connect) -> None:
    booking = await connect("booking")
    bjs = booking.nc.jetstream(timeout=2)
    await ensure_stream(bjs, BOOKING)
    await ensure_stream(bjs, DLQ, update=True)
    await bjs.publish(BOOKING_CREATED, b"created", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    notification = await connect("notification")
    js = notification.nc.jetstream(timeout=2)
    await ensure_stream(js, NOTIFICATION)
    await ensure_stream(js, DLQ)
    [fact] = await durable_reads(notification, BOOKING.name, "notification", [BOOKING_CREATED])
    assert fact.data == b"created"
    ack = await js.publish(NOTIFICATION_SENT, b"sent", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    assert ack.stream == NOTIFICATION.name
    # Recovery by replay of its own stream, and a dead letter in its own DLQ subject.
    reader_config = ConsumerConfig(
        name="notification-recovery-1", ack_policy=AckPolicy.NONE, mem_storage=True
    )
    await js.add_consumer(NOTIFICATION.name, reader_config)
    reader = PullReader(notification.nc, NOTIFICATION.name, "notification-recovery-1", batch=10)
    await reader.start()
    [replayed] = await reader.next_batch(10)
    await reader.stop()
    await js.delete_consumer(NOTIFICATION.name, "notification-recovery-1")
    assert replayed.data == b"sent"
    assert dlq_subject(BOOKING.name, "notification") == "dlq.booking.notification"
    await copy_to_dlq(js, fact, "notification", "test")
    await notification.nc.flush()
    await asyncio.sleep(0.2)
    assert notification.errors == []


async def test_notification_is_refused_what_belongs_to_others(connect: Connect) -> None:
    notification = await connect("notification")
    others = [
        "booking.created",
        "payment.succeeded",
        "cmd.booking.create",
        "query.analytics.booking_stats",
        "dlq.booking.payment",
        "dlq.booking.analytics",
        "$JS.API.STREAM.CREATE.BOOKING",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.STREAM.DELETE.NOTIFICATION",
        "$JS.API.STREAM.PURGE.NOTIFICATION",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "$JS.API.CONSUMER.MSG.NEXT.BOOKING.payment",
        "$JS.API.CONSUMER.MSG.NEXT.BOOKING.analytics",
        "$JS.API.CONSUMER.CREATE.BOOKING.notification-x",
        "$JS.API.CONSUMER.MSG.NEXT.PAYMENT.booking",
    ]
    assert await refused(notification, others) == []
    for subject in ("booking.>", "_INBOX.>", "_INBOX_gateway.>", STATS_QUERY.subject):
        await notification.nc.subscribe(subject)
    await notification.nc.flush()
    for subject in ("booking.>", "_INBOX.>", "_INBOX_gateway.>", STATS_QUERY.subject):
        assert await notification.denied(f'"{subject}"'), f"notification may subscribe to {subject}"


async def test_analytics_consumes_booking_and_answers_the_gateways_query(connect: Connect) -> None:
    assert (STATS_QUERY.subject, STATS_QUERY.queue) == ("query.analytics.booking_stats", "analytics")
    booking = await connect("booking")
    bjs = booking.nc.jetstream(timeout=2)
    await ensure_stream(bjs, BOOKING)
    await bjs.publish(BOOKING_CREATED, b"created", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    analytics = await connect("analytics")
    await ensure_stream(analytics.nc.jetstream(timeout=2), DLQ)
    [fact] = await durable_reads(analytics, BOOKING.name, "analytics", ["booking.>"])
    assert fact.data == b"created"

    async def answer(msgs: list[Msg]) -> list[bytes]:
        return [b"stats:" + m.data for m in msgs]

    server = CommandServer(analytics.nc, STATS_QUERY.subject, STATS_QUERY.queue, answer)  # type: ignore[arg-type]
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.ready.wait(), 5)
        gateway = await connect("gateway")
        reply = await gateway.nc.request(STATS_QUERY.subject, b"q", timeout=5)
        assert reply.data == b"stats:q"
        # Analytics answers only on the requester's reply subject, never on a fact subject.
        await gateway.nc.publish(STATS_QUERY.subject, b"q", reply="booking.confirmed")
        await gateway.nc.flush()
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
    ajs = analytics.nc.jetstream(timeout=2)
    await copy_to_dlq(ajs, fact, "analytics", "test")
    # Rebuild by replay: an empty database deletes its durable, which starts over.
    await ajs.delete_consumer(BOOKING.name, "analytics")
    await asyncio.sleep(0.2)
    assert (await bjs.stream_info(BOOKING.name)).state.messages == 1
    assert gateway.errors == [] and analytics.errors == []


async def test_analytics_is_refused_what_belongs_to_others(connect: Connect) -> None:
    analytics = await connect("analytics")
    others = [
        "booking.created",
        "payment.succeeded",
        "notification.sent",
        "query.analytics.booking_stats",
        "cmd.booking.create",
        "dlq.booking.notification",
        "$JS.API.STREAM.CREATE.BOOKING",
        "$JS.API.STREAM.INFO.PAYMENT",
        "$JS.API.STREAM.UPDATE.DLQ",
        "$JS.API.CONSUMER.MSG.NEXT.BOOKING.notification",
        "$JS.API.CONSUMER.DELETE.BOOKING.notification",
        "$JS.API.CONSUMER.DELETE.BOOKING.payment",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "$JS.API.CONSUMER.CREATE.BOOKING.analytics",
        "$JS.API.CONSUMER.DURABLE.CREATE.PAYMENT.analytics",
    ]
    assert await refused(analytics, others) == []
    # Its query only in its queue group: a plain subscription (every request, beside the
    # replicas) or another queue group is refused.
    await analytics.nc.subscribe(STATS_QUERY.subject)
    await analytics.nc.subscribe(STATS_QUERY.subject, queue="spy")
    await analytics.nc.subscribe("booking.>")
    await analytics.nc.flush()
    assert await analytics.denied(f'"{STATS_QUERY.subject}"')
    assert await analytics.denied('"booking.>"')
    assert sum(STATS_QUERY.subject in e.lower() for e in analytics.errors) >= 2, analytics.errors


async def test_the_other_users_are_refused_the_new_durables_and_subjects(connect: Connect) -> None:
    durables = [
        f"$JS.API.CONSUMER.{action}.BOOKING.{durable}"
        for durable in ("notification", "analytics")
        for action in ("CREATE", "MSG.NEXT", "DELETE", "DURABLE.CREATE", "INFO")
    ]
    for user in ("booking", "payment", "gateway", "operator"):
        session = await connect(user)
        # The operator may look a durable up (CONSUMER.INFO), as it may every consumer.
        mine = [s for s in durables if not (user == "operator" and ".INFO." in s)]
        forged = ["notification.sent", "dlq.booking.notification", "dlq.booking.analytics"]
        forged = [s for s in forged if not (user == "operator" and s == "notification.sent")]
        assert await refused(session, [*mine, *forged]) == [], user
    for user in ("booking", "payment", "gateway", "notification"):
        session = await connect(user)
        await session.nc.subscribe(STATS_QUERY.subject, queue=STATS_QUERY.queue)
        await session.nc.flush()
        assert await session.denied(f'"{STATS_QUERY.subject}"'), f"{user} may serve the stats query"


async def test_the_gateway_projects_notification_and_asks_for_stats(connect: Connect) -> None:
    notification = await connect("notification")
    js = notification.nc.jetstream(timeout=2)
    await ensure_stream(js, NOTIFICATION)
    await ensure_stream(js, DLQ)
    await js.publish(NOTIFICATION_SENT, b"sent")
    gateway = await connect("gateway")
    gjs = gateway.nc.jetstream(timeout=2)
    assert (await gjs.stream_info(NOTIFICATION.name)).state.messages == 1
    await gjs.add_consumer(
        NOTIFICATION.name, ConsumerConfig(name="gateway-n1", ack_policy=AckPolicy.NONE, mem_storage=True)
    )
    reader = PullReader(gateway.nc, NOTIFICATION.name, "gateway-n1", batch=1)
    await reader.start()
    [delivered] = await reader.next_batch(1)
    await reader.stop()
    await copy_to_dlq(gjs, delivered, "gateway-projection", "unreadable")
    await gjs.delete_consumer(NOTIFICATION.name, "gateway-n1")
    # Nobody answers yet: the request itself is allowed (no responders, no violation).
    await gateway.nc.publish(STATS_QUERY.subject, b"q")
    await gateway.nc.flush()
    await asyncio.sleep(0.2)
    assert gateway.errors == []
    assert await refused(gateway, ["notification.sent", "$JS.API.STREAM.CREATE.NOTIFICATION"]) == []
