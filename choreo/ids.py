"""Identifiers: time-ordered UUIDs (version 7, RFC 9562).

Booking and event ids are primary keys in every service's database: the
booking service's bookings and inbox, the payment ledger, the gateway's read
model and trace index. A random (version 4) id lands on a random leaf of each
of those B-trees, so a commit of N rows dirties about N pages per index once
the tables outgrow the page cache. A version 7 id starts with its creation time
in milliseconds, so new rows land on the last pages of each index, which a
commit writes once for all of them. The rest is random: 74 bits per id.
"""

from __future__ import annotations

import os
import time
import uuid

_RAND_B_MASK = (1 << 62) - 1


def uuid7() -> uuid.UUID:
    """A new version 7 UUID: 48 bits of Unix time in ms, version, 74 random bits, variant."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (rand >> 68) << 64  # rand_a: 12 bits
        | 0b10 << 62  # variant (RFC 9562)
        | rand & _RAND_B_MASK  # rand_b: 62 bits
    )
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new id in the canonical text form, e.g. ``0193f2a4-7c1e-7d3a-9b6f-2f0c4e8a1b2d``."""
    return str(uuid7())
