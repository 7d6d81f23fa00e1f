"""How long to wait before a failed event is delivered again."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a ceiling, then the dead-letter stream.

    JetStream redelivers a plain ``nak()`` immediately, which turns a failing
    dependency into a hot loop; every retry therefore naks with this delay.

    Attributes:
        max_deliveries: Deliveries (the first one included) before dead-lettering.
        base_seconds: Delay after the first failed delivery.
        max_seconds: Ceiling of the delay.
    """

    max_deliveries: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, num_delivered: int) -> float:
        """Delay before delivery ``num_delivered + 1``."""
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, num_delivered - 1)))

    def exhausted(self, num_delivered: int) -> bool:
        return num_delivered >= self.max_deliveries
