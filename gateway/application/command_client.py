"""Sending commands to the booking service over NATS request/reply.

The booking service's replicas share the ``cmd.booking.create`` subject in a
queue group. When none is running, NATS answers at once with "no responders",
so the gateway can say UNAVAILABLE immediately instead of waiting for a timeout.

Every command carries a deadline (``choreo.commands``): the booking service
drops a command whose deadline has passed, and rolls back a batch in which one
expired before its commit, so a create the gateway gave up on is not committed
later. The gateway sets the deadline a margin before it stops waiting; a
booking can outlive the gateway's wait only if its commit (started before the
deadline) plus the reply take longer than that margin, or if the two hosts'
clocks disagree by more than it. The timeout error says so, and names the
idempotency key (the gateway sends one with every command, its own when the
client gave none) with which a retry returns that booking instead of a second one.
"""

from __future__ import annotations

import logging
import time

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS

from choreo.booking.v1 import commands_pb2
from choreo.commands import H_DEADLINE, H_REJECTED, REJECTED_OVERLOADED, deadline_header
from choreo.contract import command_options
from choreo.envelope import (
    CONTENT_TYPE,
    H_CONTENT_TYPE,
    H_CORRELATION,
    H_ID,
    H_SOURCE,
    H_SPECVERSION,
    H_TIME,
    H_TYPE,
    SPEC_VERSION,
    now_rfc3339,
)
from choreo.metrics import Stages

log = logging.getLogger(__name__)

#: Where booking answers commands: from the contract (``choreo.options.v1.command``).
_CREATE_SUBJECT = command_options(commands_pb2.CreateBookingCommand).subject

#: Longest margin between the command's deadline and the end of the gateway's wait:
#: the time left for a commit that passed its last deadline check, and for the reply.
MAX_MARGIN_SECONDS = 1.0


class CommandUnavailable(Exception):
    """The command could not be delivered or was not answered in time; it may be retried."""


class CommandReplyInvalid(Exception):
    """The reply could not be read."""


class BookingCommands:
    """Client of the booking service's commands.

    Args:
        nc: NATS connection.
        timeout: Seconds to wait for a reply.
        source: ``ce-source`` of the commands (this service's name).
        stages: Where to add each ``command_request`` (``choreo.metrics``).
    """

    def __init__(
        self, nc: NATS, timeout: float, source: str = "gateway", stages: Stages | None = None
    ) -> None:
        self._nc = nc
        self._timeout = timeout
        self._source = source
        self._stages = stages or Stages(source)

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
        not_created = f"the booking was not created; retry{_with_key(command)}"
        if not self._nc.is_connected:
            # Requests would sit in the reconnect buffer until the timeout; fail fast instead.
            raise CommandUnavailable(f"the gateway is not connected to NATS: {not_created}")
        wait = self._timeout if timeout is None else min(self._timeout, timeout)
        margin = min(MAX_MARGIN_SECONDS, wait / 5)
        if wait - margin <= 0:
            raise CommandUnavailable(f"no time left before the call's deadline: {not_created}")
        headers = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: command_id,
            H_TYPE: command.DESCRIPTOR.full_name,
            H_SOURCE: self._source,
            H_TIME: now_rfc3339(),
            H_CONTENT_TYPE: CONTENT_TYPE,
            H_CORRELATION: correlation_id,
            H_DEADLINE: deadline_header(time.time() + wait - margin),
        }
        try:
            with self._stages.timed("command_request"):
                msg = await self._nc.request(
                    _CREATE_SUBJECT, command.SerializeToString(), timeout=wait, headers=headers
                )
        except nats.errors.NoRespondersError:
            raise CommandUnavailable(
                f"the booking service is not running (no responders): {not_created}"
            ) from None
        except nats.errors.TimeoutError:
            raise CommandUnavailable(
                f"the booking service did not answer within {wait:g}s. The booking was not created, "
                f"unless the service began committing it before the command's deadline ({margin:g}s "
                f"earlier) and took longer than that to answer; retry{_with_key(command)}: it returns "
                "that booking if it exists instead of creating a second one"
            ) from None
        except nats.errors.Error as exc:  # closed, draining, reconnecting, buffer full
            raise CommandUnavailable(
                f"NATS is unavailable ({type(exc).__name__}); the booking may or may not have been "
                f"created: retry{_with_key(command)}"
            ) from None
        rejected = (msg.headers or {}).get(H_REJECTED)
        if rejected:
            why = "is overloaded" if rejected == REJECTED_OVERLOADED else "took the command too late"
            raise CommandUnavailable(f"the booking service {why}: {not_created}")
        reply = commands_pb2.CreateBookingReply()
        try:
            reply.ParseFromString(msg.data)
        except DecodeError as exc:
            raise CommandReplyInvalid(f"unreadable reply from the booking service: {exc}") from None
        return reply


def _with_key(command: commands_pb2.CreateBookingCommand) -> str:
    key = command.idempotency_key
    return f' with idempotency_key "{key}"' if key else " with an idempotency_key"
