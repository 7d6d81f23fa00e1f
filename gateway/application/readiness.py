"""Readiness: may this gateway take traffic?

Only when it is connected to NATS, its database answers, and every feed has
caught up with what its stream held at start-up (so reads are not stale after
a restart or a rebuild). ``/readyz`` and the gRPC health service both use it.

A failing check says which it is and, in a word, how (``{"nats": "disconnected"}``,
``{"database": "unavailable"}``); the exception behind it goes to the log (once
per change), never to ``/readyz``, which anyone who reaches the port can read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from nats.aio.client import Client as NATS

from gateway.readmodel.store import ReadModel

log = logging.getLogger(__name__)


class FeedProgress(Protocol):
    """What readiness asks of a stream feed (``gateway.projection.feed.StreamFeed``).

    A protocol, so the application layer needs no import of the projection.
    """

    @property
    def caught_up(self) -> asyncio.Event:
        """Set once the feed has applied what its stream held when it started."""
        ...

    def status(self) -> str | None:
        """How far its initial replay is; ``None`` once caught up."""
        ...


class Readiness:
    """Evaluates the gateway's readiness checks.

    Args:
        nc: NATS connection.
        store: The read model (its database must answer).
        feeds: The stream feeds (each must have caught up).
        timeout: Longest a database check may take.
    """

    def __init__(
        self, nc: NATS, store: ReadModel, feeds: Sequence[FeedProgress], timeout: float = 2.0
    ) -> None:
        self._nc = nc
        self._store = store
        self._feeds = list(feeds)
        self._timeout = timeout
        self._database_error = ""

    async def failures(self) -> dict[str, str]:
        """Failing checks by name, with why (empty when ready)."""
        failures: dict[str, str] = {}
        if not self._nc.is_connected:
            failures["nats"] = "disconnected"
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.ping()
        except TimeoutError:
            failures["database"] = f"no answer within {self._timeout:g}s"
            self._note_database_error("no answer")
        except Exception as exc:
            failures["database"] = "unavailable"
            self._note_database_error(f"{type(exc).__name__}: {exc}", exc)
        else:
            self._note_database_error("")
        lagging = [s for s in (f.status() for f in self._feeds) if s]
        if lagging:
            failures["projection"] = "; ".join(lagging)
        return failures

    def _note_database_error(self, error: str, exc: Exception | None = None) -> None:
        if error != self._database_error:
            self._database_error = error
            if error:
                log.warning("readiness: the database check fails: %s", error, exc_info=exc)
            else:
                log.info("readiness: the database answers again")

    async def wait_caught_up(self) -> None:
        """Returns once every feed has caught up (or immediately if it has)."""
        await asyncio.gather(*(f.caught_up.wait() for f in self._feeds))
