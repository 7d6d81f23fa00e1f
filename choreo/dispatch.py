"""One typed dispatch: from a fact's ``ce-type`` to the entry that handles it, and its decoded body.

Services' consumers (``choreo.handler.Route``) and read-model projections (a
gateway's fact readers) react to facts with different acknowledgement semantics,
but they find their entry and decode the body the same way, here. An entry is
anything with a ``message_type``: its full protobuf name is the ``ce-type`` matched,
and the body is parsed as that class, so the entry's function receives the type
it declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from choreo.contract import type_name
from choreo.envelope import Envelope


class Typed(Protocol):
    """An entry of a dispatch table: it handles facts of one protobuf type."""

    @property
    def message_type(self) -> type[Message]: ...


E = TypeVar("E", bound=Typed)


class UnknownFactType(LookupError):
    """A fact whose ``ce-type`` no entry handles."""


class Dispatch(Generic[E]):
    """Entries by the full name of their message type (the ``ce-type`` of the facts they handle).

    Raises:
        ValueError: Two entries handle the same type.
    """

    def __init__(self, entries: Iterable[E]) -> None:
        self._entries: dict[str, E] = {}
        for entry in entries:
            name = type_name(entry.message_type)
            if name in self._entries:
                raise ValueError(f"two entries handle {name}")
            self._entries[name] = entry

    def decode(self, env: Envelope) -> tuple[E, Message]:
        """The entry for ``env``'s type and its body decoded as that entry's message type.

        Raises:
            UnknownFactType: No entry handles the type.
            google.protobuf.message.DecodeError: The body is not a message of the type.
        """
        entry = self._entries.get(env.type)
        if entry is None:
            raise UnknownFactType(f"unknown event type {env.type!r}")
        return entry, env.decode(entry.message_type)

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._entries
