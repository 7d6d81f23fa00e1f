"""Conversions between stored microsecond times and protobuf Timestamps."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(us: int) -> Timestamp:
    """A protobuf Timestamp from integer microseconds since the epoch."""
    ts = Timestamp()
    ts.FromMicroseconds(us)
    return ts


def from_timestamp(ts: Timestamp) -> int:
    """Integer microseconds since the epoch from a protobuf Timestamp."""
    return int(ts.ToMicroseconds())
