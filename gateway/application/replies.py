"""The booking service's command reply as a read-model change.

``CreateBooking`` and ``CancelBooking`` hand the booking the service just committed
straight to the read model, so the caller reads its own write before the
``BookingCreated`` (or ``BookingCancelled``) fact has come round through the
projection; the merge's status order keeps an older fact from regressing it. The reply is the service's own
state, so its cancellation reason is final, as a ``BookingCancelled``'s is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from choreo.booking.v1 import commands_pb2
from choreo.clock import from_timestamp
from gateway.application.command_client import CommandReplyInvalid, CommandUnavailable
from gateway.application.errors import ErrorCode, GatewayError
from gateway.readmodel.model import Change, Status

log = logging.getLogger(__name__)

#: A command's reply: the booking, or the service's refusal (``oneof result``).
Reply = TypeVar("Reply", commands_pb2.CreateBookingReply, commands_pb2.CancelBookingReply)

_FROM_STATE: dict[commands_pb2.BookingState.ValueType, Status] = {
    commands_pb2.BOOKING_STATE_UNSPECIFIED: Status.UNSPECIFIED,
    commands_pb2.BOOKING_STATE_PENDING: Status.PENDING,
    commands_pb2.BOOKING_STATE_CONFIRMED: Status.CONFIRMED,
    commands_pb2.BOOKING_STATE_CANCELLED: Status.CANCELLED,
}


def change_from_record(record: commands_pb2.BookingRecord) -> Change:
    """The booking service's own state, as a read-model change (its reason is final)."""
    updated = from_timestamp(record.updated_at)
    return Change(
        booking_id=record.booking_id,
        at_us=updated,
        status=_FROM_STATE.get(record.state, Status.UNSPECIFIED),
        user_id=record.user_id,
        amount_cents=record.amount_cents,
        currency=record.currency,
        correlation_id=record.correlation_id,
        payment_id=record.payment_id,
        cancellation_reason=record.cancellation_reason,
        reason_is_final=True,
        created_at_us=from_timestamp(record.created_at),
        resource_id=record.resource_id,
        quantity=record.quantity,
    )


_COMMAND_ERRORS = {
    commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT: ErrorCode.INVALID_ARGUMENT,
    # The key was used for a different booking: the existing one wins, this request conflicts.
    commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT: ErrorCode.ALREADY_EXISTS,
    commands_pb2.COMMAND_ERROR_CODE_INTERNAL: ErrorCode.INTERNAL,
    commands_pb2.COMMAND_ERROR_CODE_UNAVAILABLE: ErrorCode.UNAVAILABLE,
    # Unknown, or not the requester's: the same answer, so it tells nothing about other users.
    commands_pb2.COMMAND_ERROR_CODE_NOT_FOUND: ErrorCode.NOT_FOUND,
    commands_pb2.COMMAND_ERROR_CODE_FAILED_PRECONDITION: ErrorCode.FAILED_PRECONDITION,
}


def refusal(error: commands_pb2.CommandError, *, retry_hint: str = "") -> GatewayError:
    """The ``GatewayError`` of a command the booking service refused.

    Args:
        error: The service's reason.
        retry_hint: Appended to an UNAVAILABLE's message (how to retry safely).
    """
    code = _COMMAND_ERRORS.get(error.code, ErrorCode.INTERNAL)
    # The booking service may prefix the message with the field name; say it once.
    message = error.message.removeprefix(f"{error.field}: ") if error.field else error.message
    if code is ErrorCode.UNAVAILABLE and retry_hint:
        message += f"; {retry_hint}"
    return GatewayError(code, message or "the booking service refused the command", error.field)


async def booking_reply(what: str, call: Awaitable[Reply], *, retry_hint: str) -> Reply:
    """The reply of a command that carries a booking; ``GatewayError`` for everything else.

    Args:
        what: The command, for logs ("create booking", "cancel booking").
        call: The command's request (``gateway.application.command_client``).
        retry_hint: How to retry safely, said with an UNAVAILABLE.
    """
    try:
        reply = await call
    except CommandUnavailable as exc:
        log.warning("%s unavailable: %s", what, exc)
        raise GatewayError(ErrorCode.UNAVAILABLE, str(exc)) from None
    except CommandReplyInvalid as exc:
        log.error("%s", exc)
        raise GatewayError(ErrorCode.INTERNAL, str(exc)) from None
    if reply.WhichOneof("result") == "error":
        error = reply.error
        log.info("booking service refused the %s: %s %s", what, error.field, error.message)
        raise refusal(error, retry_hint=retry_hint)
    if reply.WhichOneof("result") != "booking" or not reply.booking.booking_id:
        raise GatewayError(ErrorCode.INTERNAL, "the booking service sent an empty reply")
    return reply
