"""Asking another service over NATS request/reply: the one way the gateway does it.

Both the booking command (``command_client``) and the analytics query
(``stats``) go through ``NatsRequester``: it sends the request with
CloudEvents-style headers and a deadline (``choreo.commands``), waits for the
reply, and turns every way of not getting one into ``RequestFailed``, whose
``failure`` says which, so each client can tell its caller what it means for
its request (a booking that may or may not exist, statistics to ask again for).

The replicas of a service share the request subject in a queue group. When none
is running, NATS answers at once with "no responders", so the gateway can say
UNAVAILABLE immediately instead of waiting for a timeout. A server drops a
request whose deadline has passed, and a command server rolls back a batch in
which one expired before its commit. The deadline is set a margin before the
gateway stops waiting; the margin leaves the time for a commit that passed its
last deadline check and for the reply.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NATS

from choreo.commands import H_DEADLINE, H_REJECTED, REJECTED_OVERLOADED, deadline_header
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

#: Longest margin between a request's deadline and the end of the gateway's wait.
MAX_MARGIN_SECONDS = 1.0


class Failure(StrEnum):
    """How a request went unanswered."""

    #: The gateway is not connected to NATS; nothing was sent.
    DISCONNECTED = "disconnected"
    #: The caller's deadline left no time to ask; nothing was sent.
    NO_TIME = "no_time"
    #: No replica of the service subscribes to the subject; nothing was delivered.
    NO_RESPONDERS = "no_responders"
    #: No reply within the wait; the service may have taken the request.
    TIMEOUT = "timeout"
    #: NATS failed while the request was out (closed, draining, reconnecting); it may have arrived.
    NATS = "nats"
    #: The service refused it unexecuted: its queue is full.
    OVERLOADED = "overloaded"
    #: The service refused it unexecuted: its deadline had passed when its turn came.
    EXPIRED = "expired"

    @property
    def maybe_delivered(self) -> bool:
        """Whether the service may have executed the request."""
        return self in (Failure.TIMEOUT, Failure.NATS)


class RequestFailed(Exception):
    """No reply; ``str()`` says what happened, in words naming the service.

    Attributes:
        failure: How it went unanswered.
        wait: Seconds the gateway waited (or would have).
        margin: Seconds between the request's deadline and the end of the wait.
    """

    def __init__(self, failure: Failure, message: str, *, wait: float, margin: float) -> None:
        super().__init__(message)
        self.failure = failure
        self.wait = wait
        self.margin = margin


class NatsRequester:
    """Sends requests to services and waits for their replies.

    Args:
        nc: NATS connection.
        source: ``ce-source`` of the requests (this service's name).
        stages: Where each request's round trip is timed (``choreo.metrics``).
    """

    def __init__(self, nc: NATS, source: str = "gateway", stages: Stages | None = None) -> None:
        self._nc = nc
        self._source = source
        self._stages = stages or Stages(source)

    async def request(
        self,
        subject: str,
        message: Message,
        *,
        service: str,
        request_id: str,
        correlation_id: str,
        timeout: float,
        time_left: float | None = None,
        stage: str,
    ) -> bytes:
        """Sends ``message`` to ``subject`` and returns the reply's body.

        Args:
            subject: Where the service answers (from the contract).
            message: The request; its full name is the ``ce-type``.
            service: The service, as the error messages name it ("the booking service").
            request_id: ``ce-id`` of the request.
            correlation_id: The workflow the request belongs to.
            timeout: Seconds to wait for the reply.
            time_left: Seconds the caller still waits, when it said (the shorter wait wins).
            stage: The ``choreo.metrics`` stage timing the round trip.

        Raises:
            RequestFailed: no reply (see ``Failure``).
        """
        wait = timeout if time_left is None else min(timeout, time_left)
        margin = min(MAX_MARGIN_SECONDS, wait / 5)

        def failed(failure: Failure, what: str) -> RequestFailed:
            return RequestFailed(failure, what, wait=wait, margin=margin)

        if not self._nc.is_connected:
            # Requests would sit in the reconnect buffer until the timeout; fail fast instead.
            raise failed(Failure.DISCONNECTED, "the gateway is not connected to NATS")
        if wait - margin <= 0:
            raise failed(Failure.NO_TIME, "no time left before the call's deadline")
        headers = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: request_id,
            H_TYPE: message.DESCRIPTOR.full_name,
            H_SOURCE: self._source,
            H_TIME: now_rfc3339(),
            H_CONTENT_TYPE: CONTENT_TYPE,
            H_CORRELATION: correlation_id,
            H_DEADLINE: deadline_header(time.time() + wait - margin),
        }
        try:
            with self._stages.timed(stage):
                reply = await self._nc.request(
                    subject, message.SerializeToString(), timeout=wait, headers=headers
                )
        except nats.errors.NoRespondersError:
            raise failed(Failure.NO_RESPONDERS, f"{service} is not running (no responders)") from None
        except nats.errors.TimeoutError:
            raise failed(Failure.TIMEOUT, f"{service} did not answer within {wait:g}s") from None
        except nats.errors.Error as exc:  # closed, draining, reconnecting, buffer full
            raise failed(Failure.NATS, f"NATS is unavailable ({type(exc).__name__})") from None
        rejected = (reply.headers or {}).get(H_REJECTED)
        if rejected == REJECTED_OVERLOADED:
            raise failed(Failure.OVERLOADED, f"{service} is overloaded")
        if rejected:
            raise failed(Failure.EXPIRED, f"{service} took the request too late")
        return reply.data
