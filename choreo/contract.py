"""Where a contract's messages travel, read from the contract itself.

Each fact message carries a ``choreo.options.v1.fact`` option naming its subject
and stream, and each command a ``choreo.options.v1.command`` option naming its
subject and queue group (``proto/choreo/options/v1/options.proto``). The runtime
reads them here, so it maps a type to its subject without knowing any service,
and a client in any language reads the same from the same contract.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.message import Message

from choreo.options.v1 import options_pb2


class ContractError(ValueError):
    """A message used as a fact or a command without the option that says where it travels."""


_FACTS: dict[str, options_pb2.FactOptions] = {}

#: What NATS reads as text in a subject token, a stream name or a queue group: no whitespace,
#: and (in a stream name) none of the characters it reserves.
_NO_SPACE = re.compile(r"\S+")
#: A JetStream stream or consumer name: no whitespace, none of ``. * > / \``.
JETSTREAM_NAME = re.compile(r"[^\s.*>/\\]+")


def _check_subject(name: str, option: str, subject: str) -> None:
    """Refuses a subject that is not one literal NATS subject.

    A wildcard token would make a consumer derived from the type (``choreo.topology``)
    read every fact under it, and a command server answer every subject under it.
    """
    if not all(_NO_SPACE.fullmatch(token) and token not in ("*", ">") for token in subject.split(".")):
        raise ContractError(
            f"{name}'s ({option}) subject {subject!r} is not a literal NATS subject "
            "(dot-separated tokens, no wildcard, no whitespace)"
        )


def type_name(message_type: type[Message]) -> str:
    """The full protobuf name of a message type (the ``ce-type`` of its facts)."""
    return str(message_type.DESCRIPTOR.full_name)


def _read_option(message_type: type[Message], extension: Any, label: str, fields: tuple[str, ...]) -> Any:
    """The option ``extension`` of a message type, with every one of ``fields`` set and a literal subject."""
    name = type_name(message_type)
    options = message_type.DESCRIPTOR.GetOptions()
    if not options.HasExtension(extension):
        raise ContractError(f"{name} has no ({label}) option")
    found = options.Extensions[extension]
    if not all(getattr(found, f) for f in fields):
        raise ContractError(f"{name}'s ({label}) option needs a {' and a '.join(fields)}")
    _check_subject(name, label, found.subject)
    return found


def fact_options(message_type: type[Message]) -> options_pb2.FactOptions:
    """The subject and stream of a fact type, from its ``choreo.options.v1.fact`` option.

    Raises:
        ContractError: The message is not declared as a fact in its contract.
    """
    name = type_name(message_type)
    found: options_pb2.FactOptions | None = _FACTS.get(name)
    if found is None:
        label = "choreo.options.v1.fact"
        found = _read_option(message_type, options_pb2.fact, label, ("subject", "stream"))
        if not JETSTREAM_NAME.fullmatch(found.stream):
            raise ContractError(f"{name}'s ({label}) stream {found.stream!r} is no stream name")
        _FACTS[name] = found
    return found


def fact_subject(message_type: type[Message]) -> str:
    """The subject a fact of this type is published on."""
    return fact_options(message_type).subject


def fact_stream(message_type: type[Message]) -> str:
    """The stream that captures facts of this type."""
    return fact_options(message_type).stream


def command_options(message_type: type[Message]) -> options_pb2.CommandOptions:
    """The subject and queue group of a command type, from its ``choreo.options.v1.command`` option.

    The queue group is required: without one, every replica of the serving service
    would receive and execute each command (two bookings, two charges).

    Raises:
        ContractError: The message is not declared as a command in its contract, or
            its option lacks a literal subject or a queue group.
    """
    label = "choreo.options.v1.command"
    found: options_pb2.CommandOptions = _read_option(
        message_type, options_pb2.command, label, ("subject", "queue")
    )
    if not _NO_SPACE.fullmatch(found.queue):
        raise ContractError(f"{type_name(message_type)}'s ({label}) queue {found.queue!r} has whitespace")
    return found
