"""How long to wait before a failed event is delivered again, and how many failures end its retries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a ceiling; the dead-letter stream after too many failures.

    JetStream redelivers a plain ``nak()`` immediately, which turns a failing
    dependency into a hot loop; every retry therefore naks with this delay.
    Transient failures (``choreo.errors``) are retried with this backoff without
    a limit; other failures, and runs that crashed the process, count against
    ``max_deliveries``.

    Attributes:
        max_deliveries: Failed (or crashed) runs of a fact before it is dead-lettered.
        base_seconds: Delay after the first failed delivery.
        max_seconds: Ceiling of the delay.
    """

    max_deliveries: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, num_delivered: int) -> float:
        """Delay before delivery ``num_delivered + 1``."""
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, num_delivered - 1)))
