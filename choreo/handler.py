"""What a handler sees: the decoded fact, its transaction, and a way to emit facts.

Handlers are small async functions ``handle(message, ctx)``. Everything they
emit is stamped with the incoming event's correlation id, and its id as the
causation id, so a workflow stays traceable without the handler doing it by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from choreo.envelope import Envelope
from choreo.subjects import subject_for


@dataclass(slots=True)
class HandlerContext:
    """The unit of work of one incoming event.

    Attributes:
        conn: The open transaction; the handler's writes, the inbox record and
            the emitted events commit (or roll back) together.
        envelope: The incoming event's metadata.
        source: Name of the service handling it (the ``ce-source`` of emitted facts).
        stream_sequence: Position of the event in its stream.
        prepared: What the route's ``prepare`` step returned, if it has one.
    """

    conn: AsyncConnection
    envelope: Envelope
    source: str
    stream_sequence: int = 0
    prepared: Any = None
    outgoing: list[Envelope] = field(default_factory=list)

    def emit(self, message: Message, *, subject: str | None = None) -> Envelope:
        """Queues a fact caused by the incoming event; it is published after commit."""
        env = Envelope.wrap(
            message,
            source=self.source,
            subject=subject or subject_for(message),
            correlation_id=self.envelope.correlation_id,
            causation_id=self.envelope.id,
        )
        self.outgoing.append(env)
        return env


Handle = Callable[[Any, HandlerContext], Awaitable[None]]
Prepare = Callable[[Any, Envelope], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """How a consumer reacts to one event type.

    Attributes:
        message_type: The protobuf class; its full name is the ``ce-type`` matched.
        handle: Runs inside the batch's database transaction.
        prepare: Optional step run before the transaction, concurrently with the
            other events of the batch: the place for calls to the outside world
            (a payment provider) that must not hold a transaction open. It must
            be idempotent, since a retried event runs it again.
    """

    message_type: type[Message]
    handle: Handle
    prepare: Prepare | None = None

    @property
    def type_name(self) -> str:
        return str(self.message_type.DESCRIPTOR.full_name)
