"""A stand-in for the booking and payment services, small enough to read in one go.

It answers ``cmd.booking.create`` like the booking service does (validation,
idempotency keys, a PENDING ``BookingRecord``), and ``cmd.booking.cancel``
(NOT_FOUND for an unknown booking or another user's unless ``any_user``,
FAILED_PRECONDITION for a CANCELLED one, else CANCELLED ``cancelled_by_user``
and a ``BookingCancelled``), and publishes the workflow's
facts with proper CloudEvents headers: ``BookingCreated`` (caused by the
command), then ``PaymentSucceeded``/``PaymentFailed`` (caused by it) and
``BookingConfirmed``/``BookingCancelled`` (caused by the payment fact). Tests
decide when the payment happens, so they can watch a booking change.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from booking.requests import validate_booking_request
from choreo.booking.v1 import commands_pb2, events_pb2
from choreo.bus import ensure_stream
from choreo.clock import to_timestamp
from choreo.contract import command_options
from choreo.db import now_us
from choreo.envelope import H_CORRELATION, H_ID, Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from tests import support
from tests.streams import (
    BOOKING,
    BOOKING_CANCELLED,
    BOOKING_CONFIRMED,
    BOOKING_CREATED,
    CMD_CREATE_BOOKING,
    DLQ,
    PAYMENT,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
)

#: Microseconds to a protobuf Timestamp, as the services stamp their facts.
ts = to_timestamp

CMD_CANCEL_BOOKING = command_options(commands_pb2.CancelBookingCommand).subject

DECLINES = {
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
}


async def publish(
    js: JetStreamContext,
    message: Message,
    *,
    subject: str,
    source: str,
    correlation_id: str,
    causation_id: str = "",
) -> Envelope:
    """Publishes one fact the way the services' outbox relays do."""
    env = Envelope.wrap(
        message, source=source, subject=subject, correlation_id=correlation_id, causation_id=causation_id
    )
    await support.publish(js, env)
    return env


@dataclass
class Booked:
    record: commands_pb2.BookingRecord
    token: str
    command_id: str = ""
    email: str = ""
    created: Envelope | None = None
    facts: list[Envelope] = field(default_factory=list)
    #: The payment's outcome: its id when it succeeded, the decline's reason when it failed.
    payment_id: str = ""
    declined: str = ""
    #: The booking once cancelled (the create's record stays as it was, for replays).
    cancelled: commands_pb2.BookingRecord | None = None


class FakeBookingService:
    """Serves ``cmd.booking.create`` in queue group ``booking``.

    Args:
        nc: NATS connection.
        js: JetStream context.
        auto_complete: Publish the payment outcome right after ``BookingCreated``.
    """

    def __init__(self, nc: NATS, js: JetStreamContext, *, auto_complete: bool = True) -> None:
        self._nc = nc
        self._js = js
        self.auto_complete = auto_complete
        self.requests = 0
        self.bookings: dict[str, Booked] = {}
        self._by_key: dict[tuple[str, str], tuple[str, str]] = {}
        self._sub: Subscription | None = None
        self._cancel_sub: Subscription | None = None
        self.cancels: list[commands_pb2.CancelBookingCommand] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.last_headers: dict[str, str] = {}
        self.last_command: commands_pb2.CreateBookingCommand | None = None

    async def start(self) -> None:
        for stream in (BOOKING, PAYMENT, DLQ):
            await ensure_stream(self._js, stream)
        self._sub = await self._nc.subscribe(CMD_CREATE_BOOKING, queue="booking", cb=self._on_request)
        await self.answer_cancels()

    async def answer_cancels(self) -> None:
        """Serves ``cmd.booking.cancel`` (again, after ``stop_cancels``)."""
        self._cancel_sub = await self._nc.subscribe(CMD_CANCEL_BOOKING, queue="booking", cb=self._on_cancel)
        await self._nc.flush()

    async def stop_cancels(self) -> None:
        """Stops serving ``cmd.booking.cancel`` (a booking service that cannot be reached)."""
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
            self._cancel_sub = None
            await self._nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        await self.stop_cancels()
        for task in list(self._tasks):
            await task

    async def _on_request(self, msg: Msg) -> None:
        self.requests += 1
        self.last_headers = dict(msg.headers or {})
        command = commands_pb2.CreateBookingCommand()
        command.ParseFromString(msg.data)
        self.last_command = command
        reply = self._create(command, self.last_headers)
        await msg.respond(reply.SerializeToString())
        if reply.WhichOneof("result") == "booking" and not reply.replayed:
            task = asyncio.create_task(self._publish_created(reply.booking.booking_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _create(
        self, c: commands_pb2.CreateBookingCommand, headers: dict[str, str]
    ) -> commands_pb2.CreateBookingReply:
        error = validate_booking_request(
            c.user_id, c.amount_cents, c.currency, c.payment_token, c.idempotency_key, email=c.email
        )
        if error is not None:
            return commands_pb2.CreateBookingReply(
                error=commands_pb2.CommandError(
                    code=commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT,
                    message=str(error),
                    field=error.field,
                )
            )
        fingerprint = f"{c.amount_cents}|{c.currency}|{c.payment_token}"
        if c.resource_id or c.quantity:
            fingerprint += f"|{c.resource_id}|{c.quantity}"
        key = (c.user_id, c.idempotency_key)
        if c.idempotency_key and key in self._by_key:
            booking_id, first = self._by_key[key]
            if first != fingerprint:
                return commands_pb2.CreateBookingReply(
                    error=commands_pb2.CommandError(
                        code=commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT,
                        message="idempotency_key was already used with different parameters",
                        field="idempotency_key",
                    )
                )
            return commands_pb2.CreateBookingReply(booking=self.bookings[booking_id].record, replayed=True)
        now = now_us()
        record = commands_pb2.BookingRecord(
            booking_id=str(uuid.uuid4()),
            user_id=c.user_id,
            amount_cents=c.amount_cents,
            currency=c.currency,
            state=commands_pb2.BOOKING_STATE_PENDING,
            correlation_id=headers.get(H_CORRELATION) or str(uuid.uuid4()),
            created_at=ts(now),
            updated_at=ts(now),
            resource_id=c.resource_id,
            quantity=max(c.quantity, 1) if c.resource_id else 0,
        )
        self.bookings[record.booking_id] = Booked(record, c.payment_token, headers.get(H_ID, ""), c.email)
        if c.idempotency_key:
            self._by_key[key] = (record.booking_id, fingerprint)
        return commands_pb2.CreateBookingReply(booking=record)

    async def _publish_created(self, booking_id: str) -> None:
        booked = self.bookings[booking_id]
        r = booked.record
        created = events_pb2.BookingCreated(
            booking_id=r.booking_id,
            user_id=r.user_id,
            amount_cents=r.amount_cents,
            currency=r.currency,
            payment_token=booked.token,
            created_at=r.created_at,
            email=booked.email,
            resource_id=r.resource_id,
            quantity=r.quantity,
        )
        booked.created = await publish(
            self._js,
            created,
            subject=BOOKING_CREATED,
            source="booking",
            correlation_id=r.correlation_id,
            causation_id=booked.command_id,
        )
        booked.facts.append(booked.created)
        if self.auto_complete:
            await self.complete(booking_id)

    async def complete(self, booking_id: str) -> None:
        """Publishes the payment's outcome and the booking's reaction to it."""
        booked = self.bookings[booking_id]
        assert booked.created is not None, "BookingCreated not published yet"
        r = booked.record
        payment_id = f"pay_{uuid.uuid4().hex[:12]}"
        reason = DECLINES.get(booked.token)
        now = now_us()
        payment: Message
        if reason is None:
            payment = payment_events.PaymentSucceeded(
                payment_id=payment_id,
                booking_id=r.booking_id,
                amount_cents=r.amount_cents,
                currency=r.currency,
                succeeded_at=ts(now),
            )
            subject = PAYMENT_SUCCEEDED
        else:
            payment = payment_events.PaymentFailed(
                payment_id=payment_id, booking_id=r.booking_id, reason=reason, failed_at=ts(now)
            )
            subject = PAYMENT_FAILED
        paid = await publish(
            self._js,
            payment,
            subject=subject,
            source="payment",
            correlation_id=r.correlation_id,
            causation_id=booked.created.id,
        )
        outcome: Message
        if reason is None:
            outcome = events_pb2.BookingConfirmed(
                booking_id=r.booking_id, payment_id=payment_id, confirmed_at=ts(now)
            )
            outcome_subject = BOOKING_CONFIRMED
            booked.payment_id = payment_id
        else:
            booked.declined = reason
            outcome = events_pb2.BookingCancelled(
                booking_id=r.booking_id, reason=reason, cancelled_at=ts(now)
            )
            outcome_subject = BOOKING_CANCELLED
        done = await publish(
            self._js,
            outcome,
            subject=outcome_subject,
            source="booking",
            correlation_id=r.correlation_id,
            causation_id=paid.id,
        )
        booked.facts += [paid, done]

    async def _on_cancel(self, msg: Msg) -> None:
        command = commands_pb2.CancelBookingCommand()
        command.ParseFromString(msg.data)
        self.cancels.append(command)
        self.last_headers = dict(msg.headers or {})
        reply = self._cancel(command)
        await msg.respond(reply.SerializeToString())
        if reply.WhichOneof("result") == "booking":
            booked = self.bookings[command.booking_id]
            r = reply.booking
            cancelled = events_pb2.BookingCancelled(
                booking_id=r.booking_id,
                reason=r.cancellation_reason,
                cancelled_at=r.updated_at,
                payment_id=r.payment_id,
                resource_id=r.resource_id,
            )
            env = await publish(
                self._js,
                cancelled,
                subject=BOOKING_CANCELLED,
                source="booking",
                correlation_id=r.correlation_id,
                causation_id=self.last_headers.get(H_ID, ""),
            )
            booked.facts.append(env)

    def _cancel(self, c: commands_pb2.CancelBookingCommand) -> commands_pb2.CancelBookingReply:
        def refused(
            code: commands_pb2.CommandErrorCode.ValueType, message: str
        ) -> commands_pb2.CancelBookingReply:
            return commands_pb2.CancelBookingReply(
                error=commands_pb2.CommandError(code=code, message=message, field="booking_id")
            )

        booked = self.bookings.get(c.booking_id)
        if booked is None or (not c.any_user and booked.record.user_id != c.user_id):
            return refused(commands_pb2.COMMAND_ERROR_CODE_NOT_FOUND, f"booking {c.booking_id} not found")
        if booked.cancelled is not None or booked.declined:
            return refused(
                commands_pb2.COMMAND_ERROR_CODE_FAILED_PRECONDITION, "the booking is already CANCELLED"
            )
        r = commands_pb2.BookingRecord()
        r.CopyFrom(booked.record)
        r.state = commands_pb2.BOOKING_STATE_CANCELLED
        r.cancellation_reason = "cancelled_by_user"
        r.payment_id = booked.payment_id
        r.updated_at.CopyFrom(ts(now_us()))
        booked.cancelled = r
        return commands_pb2.CancelBookingReply(booking=r)

    async def settled(self) -> None:
        """Waits until every fact queued so far is published."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
