"""choreo: event choreography for microservices on NATS JetStream.

This package is the runtime library every service uses. ``__all__`` below is its
public face: what a service may use (``tests/test_import_rules.py`` holds the
services to it), each name importable from here or from the module that defines
it. The rest of the modules are the runtime's own parts. The ``choreo`` command
and the developer tooling live in ``choreoctl``, which a service never imports.

The subpackages ``choreo.<service>.v1`` are generated from ``proto/`` (the only
contract between services), and ``choreo.options.v1`` from the runtime's own
contract: the options that say where a message travels (``choreo.contract``).
``docs/architecture.md`` has the layers and what may import what.

Names are resolved on first use (PEP 562), so importing one part of the runtime
(or a generated contract, which imports this package first) does not load all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> (module, attribute).
_EXPORTS: dict[str, tuple[str, str]] = {
    # Declaring a service: its topology, handlers, wiring.
    "Topology": ("choreo.topology", "Topology"),
    "Stream": ("choreo.topology", "Stream"),
    "Subscription": ("choreo.topology", "Subscription"),
    "Serves": ("choreo.topology", "Serves"),
    "TopologyError": ("choreo.topology", "TopologyError"),
    "Route": ("choreo.handler", "Route"),
    "HandlerContext": ("choreo.handler", "HandlerContext"),
    "UndeclaredEmit": ("choreo.handler", "UndeclaredEmit"),
    "Dispatch": ("choreo.dispatch", "Dispatch"),
    "fact_subject": ("choreo.contract", "fact_subject"),
    "fact_stream": ("choreo.contract", "fact_stream"),
    "command_options": ("choreo.contract", "command_options"),
    "ContractError": ("choreo.contract", "ContractError"),
    "type_name": ("choreo.contract", "type_name"),
    "open_runtime": ("choreo.runtime", "open_runtime"),
    "Runtime": ("choreo.runtime", "Runtime"),
    "Service": ("choreo.service", "Service"),
    "Component": ("choreo.service", "Component"),
    "run_main": ("choreo.service", "run_main"),
    "ServiceSettings": ("choreo.settings", "ServiceSettings"),
    "ConsumerSettings": ("choreo.settings", "ConsumerSettings"),
    # What a failure means.
    "PermanentError": ("choreo.errors", "PermanentError"),
    "Deferred": ("choreo.errors", "Deferred"),
    "TransientError": ("choreo.errors", "TransientError"),
    "Failure": ("choreo.errors", "Failure"),
    "classify": ("choreo.errors", "classify"),
    # Facts and commands on the wire.
    "Envelope": ("choreo.envelope", "Envelope"),
    "EnvelopeError": ("choreo.envelope", "EnvelopeError"),
    "now_rfc3339": ("choreo.envelope", "now_rfc3339"),
    "CONTENT_TYPE": ("choreo.envelope", "CONTENT_TYPE"),
    "SPEC_VERSION": ("choreo.envelope", "SPEC_VERSION"),
    "H_CONTENT_TYPE": ("choreo.envelope", "H_CONTENT_TYPE"),
    "H_CORRELATION": ("choreo.envelope", "H_CORRELATION"),
    "H_ID": ("choreo.envelope", "H_ID"),
    "H_SOURCE": ("choreo.envelope", "H_SOURCE"),
    "H_SPECVERSION": ("choreo.envelope", "H_SPECVERSION"),
    "H_TIME": ("choreo.envelope", "H_TIME"),
    "H_TYPE": ("choreo.envelope", "H_TYPE"),
    "CommandServer": ("choreo.commands", "CommandServer"),
    "H_DEADLINE": ("choreo.commands", "H_DEADLINE"),
    "H_REJECTED": ("choreo.commands", "H_REJECTED"),
    "REJECTED_OVERLOADED": ("choreo.commands", "REJECTED_OVERLOADED"),
    "deadline_header": ("choreo.commands", "deadline_header"),
    "deadline_of": ("choreo.commands", "deadline_of"),
    "deadline_passed": ("choreo.commands", "deadline_passed"),
    "add_to_outbox": ("choreo.outbox", "add_to_outbox"),
    # Reading streams directly (a projection), and their dead letters.
    "connect": ("choreo.bus", "connect"),
    "provision_stream": ("choreo.bus", "provision_stream"),
    "PullReader": ("choreo.pull", "PullReader"),
    "PullStalled": ("choreo.pull", "PullStalled"),
    "DLQ": ("choreo.dlq", "DLQ"),
    "copy_to_dlq": ("choreo.dlq", "copy_to_dlq"),
    # A service's database.
    "make_engine": ("choreo.db", "make_engine"),
    "normalize_url": ("choreo.db", "normalize_url"),
    "is_sqlite": ("choreo.db", "is_sqlite"),
    "lock_schema": ("choreo.db", "lock_schema"),
    "lock_key": ("choreo.db", "lock_key"),
    "big_int": ("choreo.db", "big_int"),
    "now_us": ("choreo.db", "now_us"),
    "insert_new": ("choreo.upserts", "insert_new"),
    "upsert": ("choreo.upserts", "upsert"),
    "dialect_insert": ("choreo.upserts", "dialect_insert"),
    "Migrations": ("choreo.schema", "Migrations"),
    # An operator's command opens a service's database as its process does.
    "prepare_schema": ("choreo.schema", "prepare_schema"),
    "SchemaRefused": ("choreo.schema", "SchemaRefused"),
    "load_settings": ("choreo.service", "load_settings"),
    "GroupCommit": ("choreo.groupcommit", "GroupCommit"),
    "Overloaded": ("choreo.groupcommit", "Overloaded"),
    "Closed": ("choreo.groupcommit", "Closed"),
    "Recovery": ("choreo.recovery", "Recovery"),
    "Restore": ("choreo.recovery", "Restore"),
    "start_over_if_empty": ("choreo.startover", "start_over_if_empty"),
    "read_only": ("choreo.db", "read_only"),
    "readable_file": ("choreo.settings", "readable_file"),
    "RestoreContext": ("choreo.recovery", "RestoreContext"),
    # Small shared pieces.
    "Backoff": ("choreo.retry", "Backoff"),
    "Stages": ("choreo.metrics", "Stages"),
    "METRICS_CONTENT_TYPE": ("choreo.metrics", "CONTENT_TYPE"),
    "log_context": ("choreo.logs", "log_context"),
    "to_timestamp": ("choreo.clock", "to_timestamp"),
    "from_timestamp": ("choreo.clock", "from_timestamp"),
    "rfc3339_us": ("choreo.clock", "rfc3339_us"),
    "is_valid_timestamp": ("choreo.clock", "is_valid_timestamp"),
    "new_id": ("choreo.ids", "new_id"),
    "uuid7": ("choreo.ids", "uuid7"),
    "FieldError": ("choreo.validation", "FieldError"),
    "check_id": ("choreo.validation", "check_id"),
    "check_email": ("choreo.validation", "check_email"),
    "check_name": ("choreo.validation", "check_name"),
    "NAME_CHARACTERS": ("choreo.validation", "NAME_CHARACTERS"),
    # Sealed payment tokens (booking seals, payment opens).
    "TokenSealer": ("choreo.sealing", "TokenSealer"),
    "TokenOpener": ("choreo.sealing", "TokenOpener"),
    "SealingError": ("choreo.sealing", "SealingError"),
    "parse_public_key": ("choreo.sealing", "parse_public_key"),
    "parse_private_keys": ("choreo.sealing", "parse_private_keys"),
    "encode_key": ("choreo.sealing", "encode_key"),
    "generate_keypair": ("choreo.sealing", "generate_keypair"),
}

__all__ = [
    "CONTENT_TYPE",
    "DLQ",
    "H_CONTENT_TYPE",
    "H_CORRELATION",
    "H_DEADLINE",
    "H_ID",
    "H_REJECTED",
    "H_SOURCE",
    "H_SPECVERSION",
    "H_TIME",
    "H_TYPE",
    "METRICS_CONTENT_TYPE",
    "NAME_CHARACTERS",
    "REJECTED_OVERLOADED",
    "SPEC_VERSION",
    "Backoff",
    "Closed",
    "CommandServer",
    "Component",
    "ConsumerSettings",
    "ContractError",
    "Deferred",
    "Dispatch",
    "Envelope",
    "EnvelopeError",
    "Failure",
    "FieldError",
    "GroupCommit",
    "HandlerContext",
    "Migrations",
    "Overloaded",
    "PermanentError",
    "PullReader",
    "PullStalled",
    "Recovery",
    "Restore",
    "RestoreContext",
    "Route",
    "Runtime",
    "SchemaRefused",
    "SealingError",
    "Serves",
    "Service",
    "ServiceSettings",
    "Stages",
    "Stream",
    "Subscription",
    "TokenOpener",
    "TokenSealer",
    "Topology",
    "TopologyError",
    "TransientError",
    "UndeclaredEmit",
    "add_to_outbox",
    "big_int",
    "check_email",
    "check_id",
    "check_name",
    "classify",
    "command_options",
    "connect",
    "copy_to_dlq",
    "deadline_header",
    "deadline_of",
    "deadline_passed",
    "dialect_insert",
    "encode_key",
    "fact_stream",
    "fact_subject",
    "from_timestamp",
    "generate_keypair",
    "insert_new",
    "is_sqlite",
    "is_valid_timestamp",
    "load_settings",
    "lock_key",
    "lock_schema",
    "log_context",
    "make_engine",
    "new_id",
    "normalize_url",
    "now_rfc3339",
    "now_us",
    "open_runtime",
    "parse_private_keys",
    "parse_public_key",
    "prepare_schema",
    "provision_stream",
    "read_only",
    "readable_file",
    "rfc3339_us",
    "run_main",
    "start_over_if_empty",
    "to_timestamp",
    "type_name",
    "upsert",
    "uuid7",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'choreo' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]


if TYPE_CHECKING:  # what type checkers and editors see; at run time ``__getattr__`` resolves them
    from choreo.bus import connect, provision_stream
    from choreo.clock import from_timestamp, is_valid_timestamp, rfc3339_us, to_timestamp
    from choreo.commands import (
        H_DEADLINE,
        H_REJECTED,
        REJECTED_OVERLOADED,
        CommandServer,
        deadline_header,
        deadline_of,
        deadline_passed,
    )
    from choreo.contract import ContractError, command_options, fact_stream, fact_subject, type_name
    from choreo.db import (
        big_int,
        is_sqlite,
        lock_key,
        lock_schema,
        make_engine,
        normalize_url,
        now_us,
        read_only,
    )
    from choreo.dispatch import Dispatch
    from choreo.dlq import DLQ, copy_to_dlq
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
        Envelope,
        EnvelopeError,
        now_rfc3339,
    )
    from choreo.errors import Deferred, Failure, PermanentError, TransientError, classify
    from choreo.groupcommit import Closed, GroupCommit, Overloaded
    from choreo.handler import HandlerContext, Route, UndeclaredEmit
    from choreo.ids import new_id, uuid7
    from choreo.logs import log_context
    from choreo.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
    from choreo.metrics import Stages
    from choreo.outbox import add_to_outbox
    from choreo.pull import PullReader, PullStalled
    from choreo.recovery import Recovery, Restore, RestoreContext
    from choreo.retry import Backoff
    from choreo.runtime import Runtime, open_runtime
    from choreo.schema import Migrations, SchemaRefused, prepare_schema
    from choreo.sealing import (
        SealingError,
        TokenOpener,
        TokenSealer,
        encode_key,
        generate_keypair,
        parse_private_keys,
        parse_public_key,
    )
    from choreo.service import Component, Service, load_settings, run_main
    from choreo.settings import ConsumerSettings, ServiceSettings, readable_file
    from choreo.startover import start_over_if_empty
    from choreo.topology import Serves, Stream, Subscription, Topology, TopologyError
    from choreo.upserts import dialect_insert, insert_new, upsert
    from choreo.validation import NAME_CHARACTERS, FieldError, check_email, check_id, check_name
