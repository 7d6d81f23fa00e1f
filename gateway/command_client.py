"""Sending commands to the booking service over NATS request/reply.

The booking service's replicas share the ``cmd.booking.create`` subject in a
queue group. When none is running, NATS answers at once with "no responders",
so the gateway can say UNAVAILABLE immediately instead of waiting for a timeout.
"""

from __future__ import annotations

import logging

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS

from choreo.booking.v1 import commands_pb2
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
from choreo.subjects import CMD_CREATE_BOOKING

log = logging.getLogger(__name__)


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
        self, command: commands_pb2.CreateBookingCommand, *, command_id: str, correlation_id: str
    ) -> commands_pb2.CreateBookingReply:
        """Asks the booking service to create a booking.

        Args:
            command: What to create.
            command_id: ``ce-id`` of the command (the first fact's causation id).
            correlation_id: The workflow id every fact of this booking will carry.

        Raises:
            CommandUnavailable: no booking service answered (none running, NATS down, timeout).
            CommandReplyInvalid: the reply was not a ``CreateBookingReply``.
        """
        if not self._nc.is_connected:
            # Requests would sit in the reconnect buffer until the timeout; fail fast instead.
            raise CommandUnavailable("the gateway is not connected to NATS")
        headers = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: command_id,
            H_TYPE: command.DESCRIPTOR.full_name,
            H_SOURCE: self._source,
            H_TIME: now_rfc3339(),
            H_CONTENT_TYPE: CONTENT_TYPE,
            H_CORRELATION: correlation_id,
        }
        try:
            with self._stages.timed("command_request"):
                msg = await self._nc.request(
                    CMD_CREATE_BOOKING, command.SerializeToString(), timeout=self._timeout, headers=headers
                )
        except nats.errors.NoRespondersError:
            raise CommandUnavailable("the booking service is not running (no responders)") from None
        except nats.errors.TimeoutError:
            raise CommandUnavailable(
                f"the booking service did not answer within {self._timeout:g}s; "
                "retry with the same idempotency key"
            ) from None
        except nats.errors.Error as exc:  # closed, draining, reconnecting, buffer full
            raise CommandUnavailable(f"NATS is unavailable ({type(exc).__name__})") from None
        reply = commands_pb2.CreateBookingReply()
        try:
            reply.ParseFromString(msg.data)
        except DecodeError as exc:
            raise CommandReplyInvalid(f"unreadable reply from the booking service: {exc}") from None
        return reply
