"""Limits on what callers may hold or do: create rates and open watches.

Per-caller limits key on the token's ``sub`` (``Principal.subject``), so they
apply only with ``GATEWAY_AUTH=jwt``: without authentication every caller is
the same ``ANONYMOUS`` and only the global limit on watches applies (a
per-caller limit would then throttle everybody together, ``choreo bench``
included).

* Creates (and cancels): a token bucket per caller (``rate`` per second on average,
  up to ``burst`` at once). A refused create learns when the next one will pass.
  Creates and cancels draw on the same bucket: both are commands the booking
  service executes, and the limit bounds what one caller makes it do.
* Watches: WatchBooking streams and waits (GetBooking with ``wait``, HTTP
  ``?wait=``) held open at once, per caller and in total. Each holds a
  connection's worth of memory for as long as the client likes, so their number
  is what bounds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.application.principal import Principal

#: A caller refused a watch is told to retry after this many seconds.
WATCH_RETRY_AFTER_SECONDS = 1.0


class LimitExceeded(Exception):
    """A limit refused the call.

    Attributes:
        retry_after: Seconds after which a retry may pass.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second, holding at most ``burst``.

    Full buckets are forgotten now and then (a new bucket starts full, so that
    changes nothing), which keeps memory proportional to the callers active in
    the last ``burst / rate`` seconds.

    Args:
        rate: Tokens added per second; 0 disables the limit.
        burst: Size of each bucket.
        clock: Monotonic seconds (tests).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._sweep_at = 1024

    def take(self, key: str) -> float:
        """Takes a token of ``key``'s bucket: 0.0 when one was there, else the seconds until one is."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def _sweep(self, now: float) -> None:
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self._rate < self._burst
        }
        self._sweep_at = max(1024, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)


class CallerLimits:
    """The gateway's limits on creates and on open watches.

    Args:
        create_rate: Creates per second per caller (0: unlimited).
        create_burst: Creates a caller may make at once above that rate.
        max_watches_per_caller: Watches and waits one caller may hold open.
        max_watches: Watches and waits open at once, all callers together.
        clock: Monotonic seconds (tests).
    """

    def __init__(
        self,
        *,
        create_rate: float,
        create_burst: int,
        max_watches_per_caller: int,
        max_watches: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._creates = TokenBuckets(create_rate, create_burst, clock)
        self._max_per_caller = max_watches_per_caller
        self._max_total = max_watches
        self._open: dict[str, int] = {}
        self._total = 0

    @property
    def open_watches(self) -> int:
        """Watches and waits open now."""
        return self._total

    def check_create(self, caller: Principal) -> None:
        """Counts a create of ``caller``.

        Raises:
            LimitExceeded: The caller's rate is used up.
        """
        self._take(caller, "too many bookings created; slow down")

    def check_cancel(self, caller: Principal) -> None:
        """Counts a cancel of ``caller`` (in the same bucket as its creates).

        Raises:
            LimitExceeded: The caller's rate is used up.
        """
        self._take(caller, "too many booking commands; slow down")

    def _take(self, caller: Principal, refusal: str) -> None:
        if not caller.authenticated:
            return
        wait = self._creates.take(caller.subject)
        if wait > 0:
            raise LimitExceeded(refusal, wait)

    @contextmanager
    def watching(self, caller: Principal) -> Iterator[None]:
        """Holds one watch (or wait) of ``caller`` for the ``with`` block.

        Raises:
            LimitExceeded: The caller, or the gateway, holds as many as allowed.
        """
        key = caller.subject if caller.authenticated else None
        held = self._open.get(key, 0) if key is not None else 0
        if key is not None and held >= self._max_per_caller:
            raise LimitExceeded(
                f"at most {self._max_per_caller} watches and waits per caller may be open",
                WATCH_RETRY_AFTER_SECONDS,
            )
        if self._total >= self._max_total:
            raise LimitExceeded(
                "the gateway holds as many watches and waits as it may", WATCH_RETRY_AFTER_SECONDS
            )
        self._total += 1
        if key is not None:
            self._open[key] = held + 1
        try:
            yield
        finally:
            self._total -= 1
            if key is not None:
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]
