"""What becomes of a fact once its run is over: acknowledged, retried later, or dead-lettered.

The consumer (``choreo.consumer``) runs facts; ``Verdicts`` answers JetStream for
each one, by what happened to it (``choreo.errors`` says what a failure means):

- success: acknowledged;
- not yet (``choreo.errors.Deferred``): nak'ed with exactly the delay it asks
  for; not a failure, so nothing is recorded and it is never dead-lettered for it;
- a permanent failure, or a reason to give up found before the run: copied to
  the DLQ, then terminated;
- a transient failure: nak'ed with the backoff's delay, with no limit;
- any other failure: recorded (``choreo.attempts``); nak'ed with a delay until
  it has failed ``max_deliveries`` times, then dead-lettered.

If the DLQ refuses a copy, the fact is kept (nak'ed with a delay), the DLQ stream
is provisioned again and an error is logged: nothing is dropped and nothing stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import attempts
from choreo.dlq import dead_letter
from choreo.envelope import Envelope
from choreo.errors import Deferred, Failure, classify
from choreo.handler import Route
from choreo.metrics import Stages
from choreo.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Counter of dead letters the DLQ refused: ``choreo_dlq_refused_total{service,stream,consumer}``.
DLQ_REFUSED_COUNTER = "dlq_refused_total"


@dataclass(slots=True)
class Delivery:
    """One fetched fact on its way through the consumer."""

    msg: Msg
    envelope: Envelope
    message: Message
    route: Route[Any]
    sequence: int
    deliveries: int
    prepared: Any = None
    error: BaseException | None = None
    #: Already handled (inbox): acknowledge without running.
    duplicate: bool = False
    #: Why it goes to the DLQ without (another) run, if it does.
    give_up: str = ""
    #: The record of its runs, once one was read or written.
    record: attempts.Attempts | None = None
    #: It runs on its own (its last run vanished with a process).
    alone: bool = False

    @property
    def again(self) -> bool:
        return self.deliveries > 1


class Verdicts:
    """Answers JetStream for each fact of one consumer.

    Args:
        js: JetStream context (the DLQ copies).
        engine: The service's database (the attempts records).
        stream: The consumed stream (for logs).
        durable: The consumer's name.
        retry: Backoff and the failure limit.
        ensure_dlq: Provisions the DLQ stream again, after it refused a copy.
        log_fields: The log context of a delivery.
        stages: Where ``choreo_dlq_refused_total`` is counted (``choreo.metrics``).
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        engine: AsyncEngine,
        stream: str,
        durable: str,
        retry: RetryPolicy,
        ensure_dlq: Callable[[], Awaitable[None]] | None,
        log_fields: Callable[[Delivery], dict[str, Any]],
        stages: Stages,
    ) -> None:
        self._js = js
        self._engine = engine
        self.stream = stream
        self.durable = durable
        self._retry = retry
        self._ensure_dlq = ensure_dlq
        self._log_fields = log_fields
        self._stages = stages
        self.processed = 0
        self.dead_lettered = 0
        self.dlq_failures = 0

    async def settle(self, d: Delivery) -> None:
        """Acknowledges, retries or dead-letters one fact, by what happened to it."""
        if d.give_up:
            await self.dead_letter(d.msg, d.give_up, d)
        elif d.error is None:
            if await answer(d.msg.ack()):
                self.processed += 1
        else:
            await self._failed(d, d.error)

    async def _failed(self, d: Delivery, exc: BaseException) -> None:
        if isinstance(exc, Deferred):
            await self._defer(d, exc)
            return
        error = f"{type(exc).__name__}: {exc}"
        kind = classify(exc)
        if kind is Failure.PERMANENT:
            await self.dead_letter(d.msg, f"permanent failure: {error}", d)
            return
        failures = 0
        try:
            d.record = await attempts.record_failure(
                self._engine, self.durable, d.envelope.id, counted=kind is Failure.UNKNOWN, error=error
            )
            failures = d.record.failures
        except Exception as record_exc:  # the database is down too: retry, judge later
            log.debug("could not record the failure: %r", record_exc)
        if kind is Failure.UNKNOWN and failures >= self._retry.max_deliveries:
            await self.dead_letter(d.msg, f"failed {failures} times, last error {error}", d)
            return
        delay = self._retry.delay(d.deliveries)
        log.warning(
            "handler failed (%s), retry in %.1fs: %s", kind.value, delay, error, extra=self._log_fields(d)
        )
        await answer(d.msg.nak(delay=delay))

    async def _defer(self, d: Delivery, deferred: Deferred) -> None:
        """Hands a fact that is not due yet back to JetStream, to come back in exactly ``deferred.seconds``.

        Not a failure: nothing counts against it. A fact that came back (a redelivery) had
        its run recorded when it began (``attempts.begin``); that record is dropped, so a
        fact deferred many times, across restarts, is never taken for a crash suspect.
        """
        if d.record is not None:
            try:
                async with self._engine.begin() as conn:
                    await attempts.clear(conn, self.durable, [d.envelope.id])
            except Exception as exc:  # the database blinked: the record only makes it run alone
                log.debug("could not clear the record of a deferred fact: %r", exc)
        log.debug("not due yet, back in %.3fs", deferred.seconds, extra=self._log_fields(d))
        await answer(d.msg.nak(delay=deferred.seconds))

    async def dead_letter(self, msg: Msg, error: str, d: Delivery | None = None) -> None:
        try:
            await dead_letter(self._js, msg, self.durable, error)
        except Exception as exc:
            # The DLQ refused (deleted, JetStream unavailable): keep the fact and try again later.
            self.dlq_failures += 1
            self._stages.count(
                DLQ_REFUSED_COUNTER,
                "Dead letters the DLQ stream refused (full, deleted, unavailable); the facts are kept.",
                stream=self.stream,
                consumer=self.durable,
            )
            delay = self._retry.delay(msg.metadata.num_delivered)
            log.error(
                "could not dead-letter %s seq %d (%r); it is kept and comes back in %.1fs",
                msg.subject,
                msg.metadata.sequence.stream,
                exc,
                delay,
                extra={"stream": self.stream, "stream_seq": msg.metadata.sequence.stream},
            )
            if self._ensure_dlq is not None:
                try:
                    await self._ensure_dlq()
                except Exception as provision_exc:
                    log.error("could not provision the DLQ stream: %r", provision_exc)
            await answer(msg.nak(delay=delay))
            return
        self.dead_lettered += 1
        if d is not None and d.record is not None:
            # A redrive of this fact starts with a clean record.
            with contextlib.suppress(Exception):
                async with self._engine.begin() as conn:
                    await attempts.clear(conn, self.durable, [d.envelope.id])


class HungError(Exception):
    """A run took longer than the consumer's run timeout (it counts as a failed run)."""


class HandlerCancelledError(Exception):
    """A handler or ``prepare`` step raised ``CancelledError`` without being cancelled."""


def hung(what: str, seconds: float) -> HungError:
    return HungError(f"the {what} did not finish within {seconds:g}s (run timeout)")


async def guarded(call: Awaitable[Any]) -> Any:
    """Awaits a handler's call; a ``CancelledError`` nobody asked for is the handler's failure."""
    try:
        return await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise HandlerCancelledError("raised CancelledError") from None


async def answer(reply: Awaitable[None]) -> bool:
    """Sends an ack or nak; False when NATS is gone (the server redelivers after the ack wait)."""
    try:
        await reply
        return True
    except Exception as exc:
        log.warning("could not answer JetStream: %r", exc)
        return False


async def hand_back(msgs: Sequence[Msg]) -> None:
    """Naks events that were received but not handled, so they are redelivered now, not after ack_wait."""
    for msg in msgs:
        with contextlib.suppress(Exception):  # the connection may be gone; ack_wait covers that
            await msg.nak()
