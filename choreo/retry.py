"""How long to wait before trying again: the one backoff of the project.

``Backoff`` is the rule (a capped doubling delay); ``Backoff.start()`` gives the
``Retries`` of one loop, which counts consecutive failures and starts over after
a success. ``RetryPolicy`` is the consumer's use of it: a delay per delivery
count, and the dead-letter stream after too many failures.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Doublings after which every delay is the ceiling (2**63 times any first delay is past any ceiling).
_MAX_DOUBLINGS = 63


@dataclass(frozen=True, slots=True)
class Backoff:
    """A delay that doubles with each consecutive failure, up to a ceiling.

    Attributes:
        first_seconds: Delay after the first failure.
        max_seconds: Ceiling of the delay (the first delay too is capped by it).
    """

    first_seconds: float
    max_seconds: float

    def __post_init__(self) -> None:
        if not self.first_seconds > 0:
            raise ValueError(f"first_seconds must be > 0, got {self.first_seconds!r}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds!r}")

    def delay(self, failures: int) -> float:
        """Delay after ``failures`` consecutive failures (fewer than one counts as one)."""
        doublings = min(max(0, failures - 1), _MAX_DOUBLINGS)
        return float(min(self.max_seconds, self.first_seconds * 2**doublings))

    def start(self) -> Retries:
        """A fresh count of failures for one retrying loop."""
        return Retries(self)


class Retries:
    """The consecutive failures of one loop and the delay each calls for."""

    __slots__ = ("_backoff", "_failures")

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the start or the last ``reset``."""
        return self._failures

    def next(self) -> float:
        """Counts one more failure; returns the delay before the next attempt."""
        self._failures += 1
        return self._backoff.delay(self._failures)

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits the first delay again."""
        self._failures = 0


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

    @property
    def backoff(self) -> Backoff:
        """The delay rule of this policy."""
        return Backoff(self.base_seconds, self.max_seconds)

    def delay(self, num_delivered: int) -> float:
        """Delay before delivery ``num_delivered + 1``."""
        return self.backoff.delay(num_delivered)
