"""What a failure means for the fact that met it: retry it, give up at once, or judge it later.

A consumer must not dead-letter a fact because a dependency blinked: a database
failover or a provider outage of a few seconds would otherwise send every fact
in flight to the DLQ, and leave their workflows stuck. Nor may it retry forever
what can never succeed. So every handler failure is one of three kinds:

- **transient** (``TransientError``, a lost connection, a timeout, a database
  that is restarting, refuses connections or rolled back a serialization
  conflict): retried with capped backoff, with no delivery limit;
- **permanent** (``PermanentError``, such as a fact naming a booking that does
  not exist): dead-lettered at once, since retrying cannot change the answer;
- **anything else** (most likely a bug): retried up to ``max_deliveries``
  attempts, then dead-lettered with its error, so a bug never hides a fact and
  never spins forever.

The handler (the caller) decides what is permanent by raising ``PermanentError``;
``classify`` knows the transient failures of the drivers choreo uses.

A route may also say "not yet" (``Deferred``): the fact is not a failure but
comes too early (a timeout that is not due). The consumer hands it back with
exactly the delay asked for; JetStream keeps it meanwhile, so the wait survives
restarts and is shared by replicas, and no attempt is counted against it.
"""

from __future__ import annotations

import enum
import errno
import math
import socket
import sqlite3

import asyncpg.exceptions  # type: ignore[import-untyped]
import nats.errors
import nats.js.errors
from sqlalchemy import exc as sa_exc


class PermanentError(Exception):
    """This fact can never be handled: dead-letter it now instead of retrying."""


class TransientError(Exception):
    """A dependency is unavailable for now (e.g. a provider answered 5xx): retry without a limit."""


class Deferred(Exception):
    """Not yet: the fact is to be handled again in ``seconds``, and is not a failure.

    Raised by a route's ``prepare`` step (or handler): the consumer naks the fact
    with exactly that delay, records no failed attempt, never dead-letters it for
    that, and logs it at debug level only.

    Args:
        seconds: How long from now the fact is due (a negative delay is due now).
    """

    def __init__(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            raise ValueError(f"a deferral needs a finite delay, not {seconds!r}")
        self.seconds = max(0.0, float(seconds))
        super().__init__(f"not due for {self.seconds:.3f}s")


class Failure(enum.Enum):
    """How a consumer treats a failed attempt."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


#: SQLSTATE classes and codes that say "try again" rather than "this is wrong":
#: 08 connection exception, 40 transaction rollback (serialization failure, deadlock),
#: 53 insufficient resources (disk full, out of memory, too many connections),
#: 57 operator intervention (admin shutdown, cannot connect now), 58 system error (I/O),
#: 55P03 lock not available, 25006 read-only transaction (a demoted primary after a failover).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_SQLSTATES = ("55P03", "25006")

#: SQLite errors that pass: another process holds the lock, the disk hiccuped or is full.
_TRANSIENT_SQLITE = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open",
)

#: Socket errors of a peer that is gone or not there yet.
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EPIPE",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "ENETUNREACH",
        "ENETDOWN",
        "ETIMEDOUT",
        "EADDRNOTAVAIL",
    )
    if hasattr(errno, name)
)

#: nats-py's errors of a connection that is down, reconnecting or draining, or a server that
#: did not answer in time. A JetStream API error (a refusal) is not among them.
_NATS_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.UnexpectedEOF,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


def classify(exc: BaseException) -> Failure:
    """Whether ``exc`` is worth retrying without a limit, never, or a few times.

    Looks through explicit wrappers (SQLAlchemy's ``DBAPIError.orig``, ``raise ... from``)
    but not through an exception merely raised while handling another: a bug in an
    ``except TimeoutError`` block is still a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = _classify_one(current)
        if kind is not Failure.UNKNOWN:
            return kind
        current = _inner(current)
    return Failure.UNKNOWN


def _inner(exc: BaseException) -> BaseException | None:
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, BaseException):
        return exc.orig
    return exc.__cause__


def _classify_one(exc: BaseException) -> Failure:
    if isinstance(exc, PermanentError):
        return Failure.PERMANENT
    if isinstance(exc, TransientError):
        return Failure.TRANSIENT
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):  # pool exhausted, ping failed
        return Failure.TRANSIENT
    if isinstance(exc, (TimeoutError, ConnectionError, socket.gaierror, *_NATS_TRANSIENT)):
        return Failure.TRANSIENT
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return Failure.TRANSIENT
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(sqlstate, str) and (
        sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    ):
        return Failure.TRANSIENT
    if sqlstate == "55000" and "not currently accepting connections" in str(exc):
        # The database is closed to connections (ALLOW_CONNECTIONS false, maintenance).
        return Failure.TRANSIENT
    if isinstance(exc, sqlite3.OperationalError) and any(
        text in str(exc).lower() for text in _TRANSIENT_SQLITE
    ):
        return Failure.TRANSIENT
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):  # the server closed it mid-query
        return Failure.TRANSIENT
    return Failure.UNKNOWN
