"""Latency percentiles, computed exactly from every recorded sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none).

    Nearest rank never interpolates, so every reported figure is a latency
    that a request actually had.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a set of latencies, in milliseconds."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencySummary:
        values = sorted(latencies_ms)
        mean = sum(values) / len(values) if values else 0.0
        return cls(
            count=len(values),
            mean=mean,
            p50=percentile(values, 0.50),
            p95=percentile(values, 0.95),
            p99=percentile(values, 0.99),
            max=values[-1] if values else 0.0,
        )

    def line(self) -> str:
        """One line of the figures, in milliseconds, for a script's report."""
        return (
            f"p50 {self.p50:6.1f} ms  p95 {self.p95:6.1f} ms  p99 {self.p99:6.1f} ms  "
            f"max {self.max:6.1f} ms  mean {self.mean:6.1f} ms  (n={self.count})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
