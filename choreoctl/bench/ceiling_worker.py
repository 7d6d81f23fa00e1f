"""One process of the raw messaging ceiling: ``python -m choreoctl.bench.ceiling_worker``.

The ceiling makes a booking's trip with nothing but nats-py, in the same three
processes and over the same hops as the real system:

1. ``gateway`` sends a create request (core NATS request/reply) to ``booking``,
   which publishes ``BookingCreated`` to JetStream and replies;
2. ``payment`` consumes ``BookingCreated`` and publishes ``PaymentSucceeded``;
3. ``booking`` consumes it and publishes ``BookingConfirmed``;
4. ``gateway`` consumes every booking event (as its read-model projection does)
   and ends the item when ``BookingConfirmed`` arrives.

Messages are the real protobuf events with their CloudEvents headers, consumed
through durable pull consumers in batches; a consumer acknowledges its batch
after JetStream acknowledged what the batch published (the at-least-once order
the services keep). What is left out is everything the services add on top:
the database, the outbox table, gRPC and the read model.

The ``gateway`` role also drives the load (closed or open loop, see
``choreoctl.bench.driver``). The parent talks to workers by lines: a worker prints
``ready`` once it serves, the gateway prints ``window-start``, ``window-end`` and
``result <json>``; closing a worker's stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from choreo import natsclient
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.envelope import H_CORRELATION, H_ID, Envelope
from choreo.ids import new_id
from choreo.natsidentity import tool_inbox
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.pull import PullReader
from choreoctl.bench.driver import LoadSpec, StillPending, run_load

#: Durable consumer names, one per consuming process as in the real system.
DURABLES = {"payment": "payment", "booking": "booking", "gateway": "gateway"}


class CeilingNames:
    """Streams and subjects of one ceiling run, unique so runs never collide.

    Args:
        run_id: Short token naming this run.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        root = f"ceiling.{run_id}"
        self.command = f"{root}.cmd.booking.create"
        self.booking_stream = f"CEILING_{run_id.upper()}_BOOKING"
        self.payment_stream = f"CEILING_{run_id.upper()}_PAYMENT"
        self.booking_subjects = f"{root}.booking.>"
        self.payment_subjects = f"{root}.payment.>"
        self.booking_created = f"{root}.booking.created"
        self.booking_confirmed = f"{root}.booking.confirmed"
        self.payment_succeeded = f"{root}.payment.succeeded"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _publish(js: JetStreamContext, subject: str, envelope: Envelope) -> asyncio.Future[PubAck]:
    return await js.publish_async(subject, envelope.data, headers=envelope.headers())


def _wrap(message: object, subject: str, source: str, cause: Envelope) -> Envelope:
    return Envelope.wrap(
        message,  # type: ignore[arg-type]
        source=source,
        subject=subject,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
    )


async def consume(
    nc: NATS,
    stream: str,
    durable: str,
    handle: Callable[[Envelope], Awaitable[asyncio.Future[PubAck] | None]],
    stop: asyncio.Event,
    batch_size: int,
) -> None:
    """Pulls batches; for each, handles every event, waits for what it published, then acks.

    Pulls through ``choreo.pull.PullReader``, the services' own streaming pull
    (requests kept outstanding, no fetch round trip per batch), so the ceiling
    and the services move messages the same way.

    Args:
        nc: NATS connection.
        stream: Stream the durable consumer belongs to.
        durable: The consumer.
        handle: Called per event; may return the ack future of an event it published.
        stop: Ends the loop.
        batch_size: Events per pull request and per batch.
    """
    reader = PullReader(nc, stream, durable, batch=batch_size)
    await reader.start()
    stopper = asyncio.create_task(stop.wait())
    stopper.add_done_callback(lambda _t: reader.interrupt())
    try:
        while not stop.is_set():
            msgs = await reader.next_batch(batch_size)
            published = []
            for msg in msgs:
                envelope = Envelope.from_headers(msg.subject, msg.headers, msg.data)
                future = await handle(envelope)
                if future is not None:
                    published.append(future)
            if published:
                await asyncio.gather(*published)
            for msg in msgs:
                await msg.ack()
    finally:
        stopper.cancel()
        await reader.stop()


async def run_booking(nc: NATS, names: CeilingNames, stop: asyncio.Event, batch_size: int) -> None:
    """The booking role: answers create requests and turns payments into confirmations."""
    js = nc.jetstream()
    failures: list[BaseException] = []

    def check(future: asyncio.Future[PubAck]) -> None:
        if not future.cancelled() and future.exception() is not None:
            failures.append(future.exception())  # type: ignore[arg-type]

    async def on_request(msg: Msg) -> None:
        command = commands_pb2.CreateBookingCommand()
        command.ParseFromString(msg.data)
        headers = msg.headers or {}
        booking_id = str(uuid.uuid4())
        event = booking_events.BookingCreated(
            booking_id=booking_id,
            user_id=command.user_id,
            amount_cents=command.amount_cents,
            currency=command.currency,
            payment_token=command.payment_token,
        )
        envelope = Envelope.wrap(
            event,
            source="booking",
            subject=names.booking_created,
            correlation_id=headers.get(H_CORRELATION, new_id()),
            causation_id=headers.get(H_ID, ""),
        )
        # Like the outbox relay, the publish is pipelined: the reply does not wait for its ack.
        future = await _publish(js, names.booking_created, envelope)
        future.add_done_callback(check)
        reply = commands_pb2.CreateBookingReply(
            booking=commands_pb2.BookingRecord(booking_id=booking_id, user_id=command.user_id)
        )
        await nc.publish(msg.reply, reply.SerializeToString())

    async def on_payment(envelope: Envelope) -> asyncio.Future[PubAck]:
        paid = envelope.decode(payment_events.PaymentSucceeded)
        confirmed = booking_events.BookingConfirmed(booking_id=paid.booking_id, payment_id=paid.payment_id)
        return await _publish(
            js, names.booking_confirmed, _wrap(confirmed, names.booking_confirmed, "booking", envelope)
        )

    await nc.subscribe(names.command, queue="booking", cb=on_request)
    await nc.flush()
    consumer = asyncio.create_task(
        consume(nc, names.payment_stream, DURABLES["booking"], on_payment, stop, batch_size)
    )
    _say("ready")
    await stop.wait()
    await consumer
    if failures:
        raise RuntimeError(f"{len(failures)} BookingCreated publishes failed: {failures[0]!r}")


async def run_payment(nc: NATS, names: CeilingNames, stop: asyncio.Event, batch_size: int) -> None:
    """The payment role: every created booking is paid at once."""
    js = nc.jetstream()

    async def on_created(envelope: Envelope) -> asyncio.Future[PubAck]:
        created = envelope.decode(booking_events.BookingCreated)
        paid = payment_events.PaymentSucceeded(
            booking_id=created.booking_id, payment_id=new_id(), amount_cents=created.amount_cents
        )
        return await _publish(
            js, names.payment_succeeded, _wrap(paid, names.payment_succeeded, "payment", envelope)
        )

    consumer = asyncio.create_task(
        consume(nc, names.booking_stream, DURABLES["payment"], on_created, stop, batch_size)
    )
    await nc.flush()
    _say("ready")
    await stop.wait()
    await consumer


async def run_gateway(
    nc: NATS, names: CeilingNames, stop: asyncio.Event, batch_size: int, spec: LoadSpec
) -> None:
    """The gateway role: projects booking events and drives the load."""
    waiters: dict[str, asyncio.Future[str]] = {}
    confirmed_type = booking_events.BookingConfirmed.DESCRIPTOR.full_name

    async def on_booking_event(envelope: Envelope) -> None:
        if envelope.type == confirmed_type:
            envelope.decode(booking_events.BookingConfirmed)
            waiter = waiters.pop(envelope.correlation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result("CONFIRMED")
        else:
            envelope.decode(booking_events.BookingCreated)
        return None

    consumer = asyncio.create_task(
        consume(nc, names.booking_stream, DURABLES["gateway"], on_booking_event, stop, batch_size)
    )
    command = commands_pb2.CreateBookingCommand(
        user_id="bench", amount_cents=1999, currency="EUR", payment_token="tok_visa"
    ).SerializeToString()
    loop = asyncio.get_running_loop()

    async def pipeline() -> str:
        correlation_id = new_id()
        waiter: asyncio.Future[str] = loop.create_future()
        waiters[correlation_id] = waiter
        try:
            await nc.request(
                names.command, command, timeout=5.0, headers={H_CORRELATION: correlation_id, H_ID: new_id()}
            )
        except BaseException:
            waiters.pop(correlation_id, None)
            raise
        try:
            return await asyncio.wait_for(waiter, 30.0)
        except TimeoutError:
            waiters.pop(correlation_id, None)
            raise StillPending(correlation_id) from None

    _say("ready")
    result = await run_load(
        pipeline, spec, on_window_start=lambda: _say("window-start"), on_window_end=lambda: _say("window-end")
    )
    stop.set()
    await consumer
    _say("result " + json.dumps(result.to_dict()))


async def _watch_stdin(stop: asyncio.Event) -> None:
    """Stops the worker when its parent closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


async def main(args: argparse.Namespace) -> None:
    names = CeilingNames(args.run_id)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_stdin(stop))
    nc = await natsclient.connect(
        args.nats_url,
        name=f"ceiling-{args.role}",
        pending_size=64 * 1024 * 1024,
        inbox_prefix=tool_inbox(args.nats_url, "bench"),
    )
    try:
        if args.role == "booking":
            await run_booking(nc, names, stop, args.batch_size)
        elif args.role == "payment":
            await run_payment(nc, names, stop, args.batch_size)
        else:
            spec = LoadSpec(args.mode, args.duration, args.warmup, args.concurrency, args.rate)
            await run_gateway(nc, names, stop, args.batch_size, spec)
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):
            await nc.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m choreoctl.bench.ceiling_worker")
    parser.add_argument("--role", choices=["booking", "payment", "gateway"], required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        # The services run on uvloop too (choreo.service.run_main).
        uvloop.run(main(args))


if __name__ == "__main__":
    run()
