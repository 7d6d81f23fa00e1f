"""The read model's tables, in the gateway's own database.

They live in their own SQLAlchemy metadata: the booking service also has a
``bookings`` table, and both packages may be imported in one process (tests).
Times are integer microseconds since the epoch (BIGINT).

The read model is a projection of the streams, so it is never migrated: a change
to these tables or to what the projection writes bumps ``SCHEMA_VERSION``, and a
gateway that finds another version in its database drops the tables and
rebuilds them by replaying the streams (``gateway.readmodel.store.ReadModel.open``).
"""

from __future__ import annotations

from sqlalchemy import Index, Table
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from choreo.db import big_int


class ReadModelBase(SQLModel, registry=registry()):
    """Base of the gateway's tables (a metadata of their own)."""


class BookingRow(ReadModelBase, table=True):
    """A booking's current state, merged from every fact about it."""

    __tablename__ = "bookings"
    __table_args__ = (
        # Keyset pagination, newest first, with and without a user filter.
        Index("ix_bookings_created", "created_at_us", "booking_id"),
        Index("ix_bookings_user_created", "user_id", "created_at_us", "booking_id"),
    )

    booking_id: str = Field(primary_key=True, max_length=128)
    user_id: str = Field(default="", max_length=128)
    amount_cents: int = big_int(default=0)
    currency: str = Field(default="", max_length=8)
    #: PENDING, CONFIRMED or CANCELLED (``gateway.readmodel.model.Status``).
    status: str = Field(default="UNSPECIFIED", max_length=16)
    # Not indexed: traces look workflows up in trace_events, never here.
    correlation_id: str = Field(default="", max_length=128)
    payment_id: str = Field(default="", max_length=128)
    cancellation_reason: str = Field(default="", max_length=256)
    created_at_us: int = big_int(default=0)
    updated_at_us: int = big_int(default=0)
    #: The reserved resource ("" for a booking without inventory) and its units (0 then).
    resource_id: str = Field(default="", max_length=128)
    quantity: int = Field(default=0)


class TraceEventRow(ReadModelBase, table=True):
    """One fact of a workflow, indexed from its CloudEvents headers."""

    __tablename__ = "trace_events"

    event_id: str = Field(primary_key=True, max_length=128)
    correlation_id: str = Field(max_length=128, index=True)
    booking_id: str = Field(default="", max_length=128)
    event_type: str = Field(max_length=255)
    source: str = Field(max_length=128)
    subject: str = Field(max_length=255)
    stream: str = Field(max_length=64)
    stream_sequence: int = big_int()
    causation_id: str = Field(default="", max_length=128)
    occurred_at_us: int = big_int()


class CheckpointRow(ReadModelBase, table=True):
    """The last stream sequence whose effect is committed in the read model."""

    __tablename__ = "checkpoints"

    stream: str = Field(primary_key=True, max_length=64)
    last_sequence: int = big_int(default=0)
    #: The stream's identity: when JetStream created it (ISO 8601). A stream deleted and
    #: created again has another one, and its sequences start over.
    stream_created: str = Field(default="", max_length=64)


class ReadModelMetaRow(ReadModelBase, table=True):
    """Facts about the read model itself: ``schema_version``."""

    __tablename__ = "read_model_meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", max_length=256)


bookings_table: Table = BookingRow.__table__  # type: ignore[attr-defined]
trace_events_table: Table = TraceEventRow.__table__  # type: ignore[attr-defined]
checkpoints_table: Table = CheckpointRow.__table__  # type: ignore[attr-defined]

read_model_meta_table: Table = ReadModelMetaRow.__table__  # type: ignore[attr-defined]

#: Version of the read model's tables and of what the projection writes into them. Bump it
#: with every such change: gateways rebuild a database of another version by replay.
#: 1: before versions were recorded; 2: checkpoints record the stream's identity;
#: 3: bookings have resource_id and quantity (and a CONFIRMED booking may become CANCELLED).
SCHEMA_VERSION = 3

TABLES: list[Table] = [bookings_table, trace_events_table, checkpoints_table, read_model_meta_table]
#: The tables the projection fills from the streams (emptied by a rebuild).
PROJECTED_TABLES: list[Table] = [bookings_table, trace_events_table, checkpoints_table]
