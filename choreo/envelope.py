"""The event envelope: a protobuf body with CloudEvents metadata in NATS headers.

Follows the CloudEvents NATS protocol binding (binary mode): every attribute is
a ``ce-`` header and the body is the serialized protobuf message. ``ce-id`` is
also sent as ``Nats-Msg-Id`` so JetStream drops a re-published duplicate.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.message import Message

from choreo.ids import new_id

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

H_SPECVERSION = "ce-specversion"
H_ID = "ce-id"
H_TYPE = "ce-type"
H_SOURCE = "ce-source"
H_TIME = "ce-time"
H_CORRELATION = "ce-correlationid"
H_CAUSATION = "ce-causationid"
H_CONTENT_TYPE = "content-type"
H_MSG_ID = "Nats-Msg-Id"

#: Longest event, correlation and causation id accepted: the width of every id column.
MAX_ID_LENGTH = 64

M = TypeVar("M", bound=Message)


class EnvelopeError(ValueError):
    """The message lacks the headers that make it an event."""


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One fact: who said what, when, and which workflow it belongs to.

    Attributes:
        id: Unique event id (``ce-id``); the de-duplication key everywhere.
        type: Fully-qualified protobuf message name (``ce-type``).
        source: The publishing service (``ce-source``).
        subject: NATS subject the event is published on.
        data: The serialized protobuf body.
        correlation_id: The workflow this event belongs to.
        causation_id: The ``ce-id`` of the event (or command) that caused this one.
        time: RFC 3339 timestamp of when the fact happened (``ce-time``).
    """

    id: str
    type: str
    source: str
    subject: str
    data: bytes
    correlation_id: str
    causation_id: str = ""
    time: str = field(default_factory=now_rfc3339)

    @classmethod
    def wrap(
        cls,
        message: Message,
        *,
        source: str,
        subject: str,
        correlation_id: str,
        causation_id: str = "",
        event_id: str | None = None,
    ) -> Envelope:
        """Builds the envelope of a protobuf message."""
        return cls(
            id=event_id or new_id(),  # time-ordered: inbox and trace indexes stay append-mostly
            type=message.DESCRIPTOR.full_name,
            source=source,
            subject=subject,
            data=message.SerializeToString(),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    def headers(self) -> dict[str, str]:
        """The NATS headers that carry this envelope's metadata."""
        hdrs = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: self.id,
            H_MSG_ID: self.id,
            H_TYPE: self.type,
            H_SOURCE: self.source,
            H_TIME: self.time,
            H_CONTENT_TYPE: CONTENT_TYPE,
            H_CORRELATION: self.correlation_id,
        }
        if self.causation_id:
            hdrs[H_CAUSATION] = self.causation_id
        return hdrs

    @classmethod
    def from_headers(cls, subject: str, headers: dict[str, str] | None, data: bytes) -> Envelope:
        """Reads an envelope back from a NATS message.

        Raises:
            EnvelopeError: a required ``ce-`` header is missing, or an id is
                longer than ``MAX_ID_LENGTH`` (PostgreSQL would refuse to store
                it where SQLite would not, so it is rejected everywhere).
        """
        hdrs = headers or {}
        missing = [h for h in (H_ID, H_TYPE, H_SOURCE) if not hdrs.get(h)]
        if missing:
            raise EnvelopeError(f"missing header(s): {', '.join(missing)}")
        too_long = [h for h in (H_ID, H_CORRELATION, H_CAUSATION) if len(hdrs.get(h, "")) > MAX_ID_LENGTH]
        if too_long:
            raise EnvelopeError(f"header(s) longer than {MAX_ID_LENGTH} characters: {', '.join(too_long)}")
        event_id = hdrs[H_ID]
        return cls(
            id=event_id,
            type=hdrs[H_TYPE],
            source=hdrs[H_SOURCE],
            subject=subject,
            data=data,
            # A fact without a correlation id starts its own workflow.
            correlation_id=hdrs.get(H_CORRELATION) or event_id,
            causation_id=hdrs.get(H_CAUSATION, ""),
            time=hdrs.get(H_TIME, ""),
        )

    def decode(self, message_type: builtins.type[M]) -> M:
        """Parses the body as ``message_type``; raises ``DecodeError`` on garbage."""
        message = message_type()
        message.ParseFromString(self.data)
        return message
