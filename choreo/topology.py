"""A service's topology: the stream it owns, the facts it publishes, the facts it consumes.

The runtime knows no service. Each service declares its topology in its own
package (``booking/topology.py``) and hands it to ``choreo.runtime.open_runtime``,
which provisions what it is told. Where a fact travels is part of the contract:
each fact message carries a ``choreo.options.v1.fact`` option naming its subject
and stream, and each command a ``choreo.options.v1.command`` option naming its
subject and queue group (``proto/choreo/options/v1/options.proto``). So the
subject of a type is read from the type, by every client in every language, and
a service consuming another's facts needs that service's contract, not its code.

What the Python declaration adds is what belongs to one service's deployment: which
stream it owns and the subjects it captures, which facts it may publish, and its
durable consumers with their routes (each naming the facts its handler may emit).
``Topology`` checks that these agree with the contract when it is built, so the
declarations are the truth that tools (the event-flow graph) can draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from choreo.contract import (
    JETSTREAM_NAME,
    command_options,
    fact_options,
    fact_stream,
    fact_subject,
    type_name,
)
from choreo.envelope import Envelope
from choreo.handler import Route, wrap_fact


class TopologyError(ValueError):
    """A declaration that contradicts itself or the contract."""


def _check_name(kind: str, name: str) -> None:
    if not JETSTREAM_NAME.fullmatch(name):
        raise TopologyError(
            f"{kind} name {name!r} is not a JetStream name (no whitespace, none of . * > / \\)"
        )


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream subject (``*`` and ``>`` wildcards) captures ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


@dataclass(frozen=True, slots=True)
class Stream:
    """A JetStream stream: its name and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_name("stream", self.name)

    def captures(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.subjects)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable consumer of one stream: the facts it reacts to and how.

    Its stream and subject filters come from its routes' fact types (the contract),
    so it receives exactly the facts it has a route for: a fact type added to the
    stream later never reaches it, and never lands in its dead letters.
    """

    durable: str
    routes: tuple[Route[Any], ...]

    def __post_init__(self) -> None:
        # Refused here, at build: JetStream refusing it later reads as NATS not being ready yet,
        # and the consumer would wait for it forever.
        _check_name("durable consumer", self.durable)
        if not self.routes:
            raise TopologyError(f"consumer {self.durable} has no routes")
        streams = {fact_stream(r.message_type) for r in self.routes}
        if len(streams) != 1:
            raise TopologyError(f"consumer {self.durable} reads several streams: {sorted(streams)}")

    @property
    def stream(self) -> str:
        return fact_stream(self.routes[0].message_type)

    @property
    def subjects(self) -> list[str]:
        return sorted({fact_subject(r.message_type) for r in self.routes})


@dataclass(frozen=True, slots=True)
class Serves:
    """A command a service answers, and the facts answering it may publish."""

    command: type[Message]
    emits: tuple[type[Message], ...] = ()

    @property
    def subject(self) -> str:
        return command_options(self.command).subject

    @property
    def queue(self) -> str:
        return command_options(self.command).queue

    def wrap(self, fact: Message, *, source: str, correlation_id: str, causation_id: str) -> Envelope:
        """The envelope of a fact answering the command (``UndeclaredEmit`` unless ``emits`` names it)."""
        who = f"command {type_name(self.command)}"
        return wrap_fact(
            fact, self.emits, who, source=source, correlation_id=correlation_id, causation_id=causation_id
        )


@dataclass(frozen=True)
class Topology:
    """What one service owns, publishes and consumes.

    Attributes:
        service: The service's name (its ``ce-source``).
        stream: The stream it owns and provisions, if it publishes.
        publishes: The fact types it may publish; each must be on ``stream``, on a subject it captures.
        subscriptions: Its durable consumers.
        serves: The commands it answers.

    Raises:
        TopologyError: A declaration contradicts the contract or another declaration.
    """

    service: str
    stream: Stream | None = None
    publishes: tuple[type[Message], ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    serves: tuple[Serves, ...] = ()

    def __post_init__(self) -> None:
        for fact in self.publishes:
            options = fact_options(fact)
            if self.stream is None or options.stream != self.stream.name:
                raise TopologyError(
                    f"{self.service} publishes {type_name(fact)}, whose contract puts it on stream "
                    f"{options.stream}, but it owns {self.stream.name if self.stream else 'no stream'}"
                )
            if not self.stream.captures(options.subject):
                raise TopologyError(
                    f"stream {self.stream.name} does not capture {options.subject} ({type_name(fact)})"
                )
        for sub in self.subscriptions:
            self._check_emits(sub)
        for serves in self.serves:
            self._check_published(serves.emits, f"command {type_name(serves.command)}")
            if self.stream is not None and self.stream.captures(serves.subject):
                # JetStream would store each request as a fact and answer it with a publish ack.
                raise TopologyError(
                    f"stream {self.stream.name} captures {serves.subject}, the subject of command "
                    f"{type_name(serves.command)}: commands travel outside every stream"
                )
        durables = [s.durable for s in self.subscriptions]
        if len(durables) != len(set(durables)):
            raise TopologyError(f"{self.service} declares a durable consumer twice: {durables}")

    def _check_emits(self, subscription: Subscription) -> None:
        """Raises ``TopologyError`` unless the service publishes every fact the subscription's routes emit."""
        for route in subscription.routes:
            where = f"the route of {type_name(route.message_type)} in consumer {subscription.durable}"
            self._check_published(route.emits, where)

    def _check_published(self, emits: Iterable[type[Message]], where: str) -> None:
        for emitted in emits:
            if emitted not in self.publishes:
                raise TopologyError(
                    f"{where} emits {type_name(emitted)}, which {self.service} does not publish"
                )

    def stream_of(self, subject: str) -> str:
        """The stream of a subject this service publishes on (the subject itself for any other)."""
        if self.stream is not None and self.stream.captures(subject):
            return self.stream.name
        return subject
