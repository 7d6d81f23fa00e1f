"""Time-ordered ids."""

from __future__ import annotations

import time
import uuid

from choreo.ids import new_id, uuid7


def test_version_variant_and_time_prefix() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_ids_sort_by_creation_time_and_do_not_repeat() -> None:
    first = [new_id() for _ in range(2000)]
    time.sleep(0.002)
    later = [new_id() for _ in range(2000)]
    assert max(first) < min(later)  # a later millisecond sorts after, as text too
    assert len(set(first + later)) == 4000
    assert all(str(uuid.UUID(i)) == i for i in first[:10])
