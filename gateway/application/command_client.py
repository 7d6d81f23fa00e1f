"""Sending commands to the booking service over NATS request/reply (``nats_request``).

The booking service's replicas share the ``cmd.booking.create`` and
``cmd.booking.cancel`` subjects in a queue group. Every command carries a deadline
(``choreo.commands``): the booking service drops a command whose deadline has
passed, and rolls back a batch in which one expired before its commit, so a create
the gateway gave up on is not committed later. A booking can outlive the gateway's
wait only if its commit (started before the deadline) plus the reply take longer
than the margin between the deadline and the end of the wait, or if the two hosts'
clocks disagree by more than it. The timeout error says so, and names the
idempotency key (the gateway sends one with every create, its own when the client
gave none) with which a retry returns that booking instead of a second one. A
cancel needs no key: cancelling again is safe (an already cancelled booking is
answered FAILED_PRECONDITION, and nothing happens twice).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from choreo.booking.v1 import commands_pb2
from choreo.contract import command_options
from gateway.application.nats_request import Failure, NatsRequester, RequestFailed

#: Where booking answers commands: from the contract (``choreo.options.v1.command``).
_CREATE_SUBJECT = command_options(commands_pb2.CreateBookingCommand).subject
_CANCEL_SUBJECT = command_options(commands_pb2.CancelBookingCommand).subject
_SERVICE = "the booking service"

R = TypeVar("R", bound=Message)


class CommandUnavailable(Exception):
    """The command could not be delivered or was not answered in time; it may be retried."""


class CommandReplyInvalid(Exception):
    """The reply could not be read."""


class BookingCommands:
    """Client of the booking service's commands.

    Args:
        requester: Sends the requests.
        timeout: Seconds to wait for a reply.
    """

    def __init__(self, requester: NatsRequester, timeout: float) -> None:
        self._requester = requester
        self._timeout = timeout

    async def create(
        self,
        command: commands_pb2.CreateBookingCommand,
        *,
        command_id: str,
        correlation_id: str,
        timeout: float | None = None,
    ) -> commands_pb2.CreateBookingReply:
        """Asks the booking service to create a booking.

        Args:
            command: What to create (with an idempotency key: the error messages name it).
            command_id: ``ce-id`` of the command (the first fact's causation id).
            correlation_id: The workflow id every fact of this booking will carry.
            timeout: Seconds the caller can wait, when shorter than the configured timeout.

        Raises:
            CommandUnavailable: no booking service answered (none running, NATS down, timeout);
                the message says whether the booking may exist.
            CommandReplyInvalid: the reply was not a ``CreateBookingReply``.
        """
        try:
            data = await self._ask(_CREATE_SUBJECT, command, command_id, correlation_id, timeout)
        except RequestFailed as exc:
            raise CommandUnavailable(_explain_create(exc, command)) from None
        return _parse(data, commands_pb2.CreateBookingReply())

    async def cancel(
        self,
        command: commands_pb2.CancelBookingCommand,
        *,
        command_id: str,
        correlation_id: str,
        timeout: float | None = None,
    ) -> commands_pb2.CancelBookingReply:
        """Asks the booking service to cancel a booking on its user's behalf.

        Args:
            command: Which booking, who asks, and whether the requester acts for every user.
            command_id: ``ce-id`` of the command (the ``BookingCancelled``'s causation id).
            correlation_id: The booking's workflow, when the gateway knows it (else a new id).
            timeout: Seconds the caller can wait, when shorter than the configured timeout.

        Raises:
            CommandUnavailable: no booking service answered; the message says whether the
                booking may have been cancelled.
            CommandReplyInvalid: the reply was not a ``CancelBookingReply``.
        """
        try:
            data = await self._ask(_CANCEL_SUBJECT, command, command_id, correlation_id, timeout)
        except RequestFailed as exc:
            raise CommandUnavailable(_explain_cancel(exc)) from None
        return _parse(data, commands_pb2.CancelBookingReply())

    async def _ask(
        self, subject: str, command: Message, command_id: str, correlation_id: str, timeout: float | None
    ) -> bytes:
        return await self._requester.request(
            subject,
            command,
            service=_SERVICE,
            request_id=command_id,
            correlation_id=correlation_id,
            timeout=self._timeout,
            time_left=timeout,
            stage="command_request",
        )


def _parse(data: bytes, reply: R) -> R:
    try:
        reply.ParseFromString(data)
    except DecodeError as exc:
        raise CommandReplyInvalid(f"unreadable reply from the booking service: {exc}") from None
    return reply


def _explain_create(exc: RequestFailed, command: commands_pb2.CreateBookingCommand) -> str:
    """What an unanswered create means for the booking, and how to retry safely."""
    key = command.idempotency_key
    retry = f'retry with idempotency_key "{key}"' if key else "retry with an idempotency_key"
    if exc.failure is Failure.TIMEOUT:
        return (
            f"{exc}. The booking was not created, unless the service began committing it before "
            f"the command's deadline ({exc.margin:g}s earlier) and took longer than that to answer; "
            f"{retry}: it returns that booking if it exists instead of creating a second one"
        )
    if exc.failure.maybe_delivered:
        return f"{exc}; the booking may or may not have been created: {retry}"
    return f"{exc}: the booking was not created; {retry}"


def _explain_cancel(exc: RequestFailed) -> str:
    """What an unanswered cancel means for the booking, and that a retry is safe."""
    retry = "retry: a cancelled booking answers FAILED_PRECONDITION, and nothing is refunded twice"
    if exc.failure.maybe_delivered:
        return f"{exc}; the booking may or may not have been cancelled: {retry}"
    return f"{exc}: the booking was not cancelled; retry"
