"""Conversions between stored microsecond times, protobuf Timestamps and RFC 3339 text."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(us: int) -> Timestamp:
    """A protobuf Timestamp from integer microseconds since the epoch."""
    ts = Timestamp()
    ts.FromMicroseconds(us)
    return ts


def from_timestamp(ts: Timestamp) -> int:
    """Integer microseconds since the epoch from a protobuf Timestamp."""
    return int(ts.ToMicroseconds())


#: The range of ``google.protobuf.Timestamp``: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS = -62_135_596_800, 253_402_300_799


def is_valid_timestamp(ts: Timestamp) -> bool:
    """Whether ``ts`` is a time a Timestamp may hold (a decoded message's may be any numbers)."""
    return MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS and 0 <= ts.nanos < 1_000_000_000


def rfc3339_us(value: str) -> int | None:
    """An RFC 3339 time (a fact's ``ce-time``) in microseconds since the epoch, or ``None``.

    ``None`` for text that is no time, and for a time without an offset: RFC 3339 requires
    one, and reading it as this host's local time would give each host its own answer.
    """
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
