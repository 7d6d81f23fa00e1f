"""What a handler sees: the decoded fact, its transaction, and a way to emit facts.

Handlers are small async functions ``handle(message, ctx)`` whose first argument
is the route's message type (``Route[M]``). Everything they emit is stamped with
the incoming event's correlation id, and its id as the causation id, so a
workflow stays traceable without the handler doing it by hand; and only the fact
types their route declares (``Route.emits``) may be emitted, so the declared
topology is the truth about who publishes what.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from choreo.contract import fact_subject, type_name
from choreo.envelope import Envelope
from choreo.errors import PermanentError


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
        emits: The fact types the route may emit (``Route.emits``).
    """

    conn: AsyncConnection
    envelope: Envelope
    source: str
    stream_sequence: int = 0
    prepared: Any = None
    emits: tuple[type[Message], ...] = ()
    outgoing: list[Envelope] = field(default_factory=list)

    def emit(self, message: Message) -> Envelope:
        """Queues a fact caused by the incoming event; it is published after commit.

        Raises:
            UndeclaredEmit: The route does not declare the fact's type in its ``emits``.
        """
        env = wrap_fact(
            message,
            self.emits,
            "this route",
            source=self.source,
            correlation_id=self.envelope.correlation_id,
            causation_id=self.envelope.id,
        )
        self.outgoing.append(env)
        return env


def wrap_fact(
    message: Message,
    emits: tuple[type[Message], ...],
    who: str,
    *,
    source: str,
    correlation_id: str,
    causation_id: str,
) -> Envelope:
    """The envelope of a fact on its contract's subject, if its type is one ``who`` declares it emits.

    Raises:
        UndeclaredEmit: ``emits`` does not name the fact's type.
    """
    if type(message) not in emits:
        raise UndeclaredEmit(
            f"{type_name(type(message))} is not among the facts {who} emits "
            f"({', '.join(type_name(t) for t in emits) or 'none'}): declare it in its emits"
        )
    return Envelope.wrap(
        message,
        source=source,
        subject=fact_subject(type(message)),
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


class UndeclaredEmit(PermanentError):
    """A handler emitted a fact type its route does not declare.

    A bug no retry can fix: the fact is dead-lettered at once, nothing of its
    transaction is committed, and it can be re-driven once the route is fixed.
    """


M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Route(Generic[M]):
    """How a consumer reacts to one event type.

    Attributes:
        message_type: The protobuf class; its full name is the ``ce-type`` matched,
            and the handler receives the body decoded as this class.
        handle: Runs inside the batch's database transaction.
        emits: The fact types ``handle`` may emit; emitting another raises ``UndeclaredEmit``.
        prepare: Optional step run before the transaction, concurrently with the
            other events of the batch: the place for calls to the outside world
            (a payment provider) that must not hold a transaction open. It must
            be idempotent, since a retried event runs it again.
    """

    message_type: type[M]
    handle: Callable[[M, HandlerContext], Awaitable[None]]
    emits: tuple[type[Message], ...] = ()
    prepare: Callable[[M, Envelope], Awaitable[Any]] | None = None
