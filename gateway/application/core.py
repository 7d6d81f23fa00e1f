"""The gateway's application logic, shared by the gRPC and the HTTP API.

The API layers only translate: requests into these calls, results into
messages, and ``GatewayError`` into a gRPC status or an HTTP error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

from booking.requests import validate_booking_request
from choreo.booking.v1 import commands_pb2
from choreo.gateway.v1 import gateway_pb2
from choreo.ids import new_id
from choreo.logs import log_context
from gateway.application.causal import causal_order
from gateway.application.command_client import BookingCommands
from gateway.application.errors import ErrorCode, GatewayError, check_id
from gateway.application.limits import CallerLimits, LimitExceeded
from gateway.application.paging import InvalidPageToken, PageTokens
from gateway.application.principal import Principal
from gateway.application.replies import booking_reply, change_from_record
from gateway.application.watchers import Watchers
from gateway.readmodel.merge import merge
from gateway.readmodel.model import BookingView, Change, Cursor, Status, TraceCursor, TraceRecord
from gateway.readmodel.store import ReadModel, WriteBatch

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Facts per trace page by default, and at most (a workflow has a handful; a page holds it whole).
DEFAULT_TRACE_PAGE_SIZE = 100
MAX_TRACE_PAGE_SIZE = 1000
#: Prefix of the idempotency keys the gateway makes for requests that came without one.
GATEWAY_KEY_PREFIX = "gw-"


@dataclass(frozen=True, slots=True)
class TracePage:
    """One page of a workflow's facts.

    Attributes:
        correlation_id: The workflow.
        events: Its facts, in causal order within the page.
        next_page_token: The token of the next page; empty on the last one.
    """

    correlation_id: str
    events: list[TraceRecord]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Created:
    """The outcome of CreateBooking.

    Attributes:
        booking: The booking as the booking service saved it.
        replayed: An earlier request with the same idempotency key created it.
    """

    booking: BookingView
    replayed: bool


class GatewayCore:
    """Creates bookings through the booking service and answers reads from the read model.

    Args:
        store: The read model.
        commands: Client of the booking service.
        watchers: Change notification of the read model.
        max_wait_seconds: Longest ``wait`` allowed.
        not_found_grace_seconds: How long a read of an unknown booking waits for it
            to arrive from another replica's create before answering NOT_FOUND.
        page_tokens: Signs the page tokens (default: a random key of this process).
        limits: Limits on creates and open watches (``None``: none).

    Every call names its ``caller``. A caller that is not an admin (``Principal.is_admin``;
    with ``GATEWAY_AUTH=none`` everyone is) creates bookings only for itself, lists only its
    own, and is told NOT_FOUND about another user's booking or workflow, exactly as about
    one that does not exist.
    """

    def __init__(
        self,
        *,
        store: ReadModel,
        commands: BookingCommands,
        watchers: Watchers,
        max_wait_seconds: float,
        not_found_grace_seconds: float = 0.0,
        limits: CallerLimits | None = None,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._page_tokens = page_tokens or PageTokens()
        self._store = store
        self._commands = commands
        self._watchers = watchers
        self._limits = limits
        self.max_wait_seconds = max_wait_seconds
        self.not_found_grace_seconds = not_found_grace_seconds

    def shut_down(self) -> None:
        """Ends every watch and wait now, so servers can stop without waiting for them."""
        self._watchers.close()

    async def create(
        self,
        request: gateway_pb2.CreateBookingRequest,
        *,
        caller: Principal,
        correlation_id: str = "",
        timeout: float | None = None,
    ) -> Created:
        """Validates, sends the command, and records the booking in the read model.

        A request without an idempotency key gets one of the gateway's (``gw-...``),
        so the command is safe to send again; an UNAVAILABLE message names it. An
        authenticated caller's request without a ``user_id`` is for the caller.

        Args:
            request: The booking to create.
            caller: Who asks; only an admin may create bookings for another user.
            correlation_id: The client's workflow id (new one when empty); see
                ``_check_correlation`` for whose it may be.
            timeout: Seconds the client still waits (its call's deadline), if it said.

        Raises:
            GatewayError: INVALID_ARGUMENT (nothing sent), PERMISSION_DENIED (another user's
                ``user_id`` or ``correlation_id``), RESOURCE_EXHAUSTED (the caller's create
                rate), ALREADY_EXISTS (idempotency key reused with other parameters),
                UNAVAILABLE (retry), INTERNAL.
        """
        if self._limits is not None:
            try:
                self._limits.check_create(caller)
            except LimitExceeded as exc:
                raise _exhausted(exc) from None
        user_id = request.user_id or (caller.subject if caller.authenticated else "")
        invalid = validate_booking_request(
            user_id,
            request.amount_cents,
            request.currency,
            request.payment_token,
            request.idempotency_key,
            email=request.email,
            resource_id=request.resource_id,
            quantity=request.quantity,
        )
        if invalid is not None:
            raise GatewayError(ErrorCode.INVALID_ARGUMENT, invalid.message, invalid.field)
        if not caller.may_act_for(user_id):
            raise GatewayError(
                ErrorCode.PERMISSION_DENIED, "must be the caller's own (the token's sub) or empty", "user_id"
            )
        if correlation_id:
            check_id("correlation_id", correlation_id)
            await self._check_correlation(correlation_id, caller)
        else:
            correlation_id = new_id()
        command_id = new_id()
        command = commands_pb2.CreateBookingCommand(
            user_id=user_id,
            amount_cents=request.amount_cents,
            currency=request.currency,
            payment_token=request.payment_token,
            idempotency_key=request.idempotency_key or f"{GATEWAY_KEY_PREFIX}{new_id()}",
            email=request.email,
            resource_id=request.resource_id,
            quantity=request.quantity,
        )
        with log_context(correlation_id=correlation_id, command_id=command_id):
            reply = await booking_reply(
                "create booking",
                self._commands.create(
                    command, command_id=command_id, correlation_id=correlation_id, timeout=timeout
                ),
                retry_hint=f"retry with idempotency_key {command.idempotency_key!r}",
            )
            change = change_from_record(reply.booking)
            await self._record(change)
            # DEBUG: one line per booking costs real CPU at load; the trace API is the per-workflow view.
            log.debug(
                "booking %s created%s",
                change.booking_id,
                " (idempotent replay)" if reply.replayed else "",
                extra={"correlation_id": change.correlation_id or correlation_id},
            )
            return Created(merge(None, change), reply.replayed)

    async def cancel(
        self, booking_id: str, *, caller: Principal, timeout: float | None = None
    ) -> BookingView:
        """Asks the booking service to cancel the booking for its user; returns it CANCELLED.

        The booking service decides (it holds the truth): the caller must be the booking's
        user unless it acts for every user (``Principal.is_admin``: ``bookings:admin``, or
        no authentication). The cancelled booking goes into the read model before the
        answer, as a created one does, so a read right after sees it CANCELLED; the merge's
        status order keeps a ``BookingConfirmed`` projected later from un-cancelling it.

        Args:
            booking_id: The booking to cancel.
            caller: Who asks (the command's ``user_id``).
            timeout: Seconds the client still waits (its call's deadline), if it said.

        Raises:
            GatewayError: INVALID_ARGUMENT, RESOURCE_EXHAUSTED (the caller's command rate),
                NOT_FOUND (unknown, or not the caller's), FAILED_PRECONDITION (already
                CANCELLED), UNAVAILABLE (retry: a cancel that did commit answers
                FAILED_PRECONDITION), INTERNAL.
        """
        if self._limits is not None:
            try:
                self._limits.check_cancel(caller)
            except LimitExceeded as exc:
                raise _exhausted(exc) from None
        check_id("booking_id", booking_id)
        known: BookingView | None = None
        try:
            known = await self._store.get(booking_id)
        except Exception as exc:  # the booking service decides; the read model only names the workflow
            log.warning("could not read booking %s from the read model: %r", booking_id, exc)
        # The booking's workflow when known, so the command's log lines join its trace.
        correlation_id = known.correlation_id if known is not None and known.correlation_id else new_id()
        command_id = new_id()
        command = commands_pb2.CancelBookingCommand(
            booking_id=booking_id, user_id=caller.subject, any_user=caller.is_admin
        )
        with log_context(correlation_id=correlation_id, command_id=command_id):
            try:
                reply = await booking_reply(
                    "cancel booking",
                    self._commands.cancel(
                        command, command_id=command_id, correlation_id=correlation_id, timeout=timeout
                    ),
                    retry_hint="retry; a cancel that did commit answers FAILED_PRECONDITION",
                )
            except GatewayError as failure:
                if failure.code is ErrorCode.NOT_FOUND:
                    # As ``get`` says it, whatever the service wrote: nothing about other users.
                    raise GatewayError(
                        ErrorCode.NOT_FOUND, f"booking {booking_id} not found", "booking_id"
                    ) from None
                raise
            if reply.booking.booking_id != booking_id:
                raise GatewayError(ErrorCode.INTERNAL, "the booking service sent a foreign reply")
            change = change_from_record(reply.booking)
            await self._record(change)
            log.info("booking %s cancelled by %s", booking_id, caller.subject or "an anonymous caller")
            return merge(known, change)

    async def _record(self, change: Change) -> None:
        """Writes the booking service's reply into the read model (read-your-writes)."""
        try:
            # Before answering, so a read right after the command finds its effect.
            await self._store.write(WriteBatch(changes=[change]))
        except Exception as exc:
            # The booking service committed it; the projection will bring it in from the stream.
            log.warning("could not record booking %s in the read model: %r", change.booking_id, exc)

    async def _check_correlation(self, correlation_id: str, caller: Principal) -> None:
        """Lets a caller choose a correlation id only if it is new or names the caller's workflow.

        Otherwise its facts would join another user's trace. The owners of a workflow are the
        users of the bookings its indexed facts name; a workflow whose facts name no booking
        the read model knows counts as someone else's.

        The check sees what the read model has projected: two users who choose the same new
        id within the projection's lag (a create is indexed for traces once its
        ``booking.created`` fact is projected, a few milliseconds after the reply) both pass.
        Their workflow then has two owners, and ``trace`` shows it to neither.

        Raises:
            GatewayError: PERMISSION_DENIED, field ``correlation_id``.
        """
        if caller.is_admin:
            return
        known, owners = await self._store.correlation_owners(correlation_id)
        if known and owners != {caller.subject}:
            raise GatewayError(
                ErrorCode.PERMISSION_DENIED,
                "names a workflow that is not the caller's; choose a new one or send none",
                "correlation_id",
            )

    async def get(self, booking_id: str, *, caller: Principal) -> BookingView:
        """The booking; NOT_FOUND when the read model has never heard of it or it is another user's.

        An unknown id waits up to ``not_found_grace_seconds`` for the projection:
        with several gateway replicas, a booking created through another replica
        reaches this one's read model a few milliseconds later, and a client that
        reads its own write must not see a 404 in that window. Another user's
        booking is answered NOT_FOUND just as late, so the time taken tells nothing.
        """
        check_id("booking_id", booking_id)
        loop = asyncio.get_running_loop()
        answer_at = loop.time() + self.not_found_grace_seconds
        view = await self._store.get(booking_id)
        if view is None and self.not_found_grace_seconds > 0:
            with self._watchers.watch(booking_id) as changed:
                # Look again once registered, so a change between the two reads is not missed.
                view = await self._store.get(booking_id)
                if view is None and not self._watchers.closed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.not_found_grace_seconds):
                            await changed.wait()
                    view = self._watchers.latest(booking_id) or await self._store.get(booking_id)
        if view is not None and not caller.may_act_for(view.user_id):
            view = None
            delay = answer_at - loop.time()
            if delay > 0 and not self._watchers.closed:
                await asyncio.sleep(delay)
        if view is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"booking {booking_id} not found", "booking_id")
        return view

    async def list_bookings(
        self, *, caller: Principal, user_id: str, status: Status | None, page_size: int, page_token: str
    ) -> tuple[list[BookingView], str]:
        """One page of bookings, newest first, and the token of the next page ("" at the end).

        A caller that is not an admin lists its own bookings (``user_id`` empty or its own);
        naming another user is PERMISSION_DENIED.
        """
        if user_id:
            check_id("user_id", user_id)
        if not caller.is_admin:
            if user_id and user_id != caller.subject:
                raise GatewayError(
                    ErrorCode.PERMISSION_DENIED,
                    "must be the caller's own (the token's sub) or empty",
                    "user_id",
                )
            user_id = caller.subject
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise GatewayError(
                ErrorCode.INVALID_ARGUMENT, f"must be between 0 and {MAX_PAGE_SIZE}", "page_size"
            )
        size = page_size or DEFAULT_PAGE_SIZE
        status_key = str(status) if status else ""
        after: Cursor | None = None
        if page_token:
            try:
                after = self._page_tokens.bookings_cursor(page_token, user_id=user_id, status=status_key)
            except InvalidPageToken as exc:
                raise GatewayError(ErrorCode.INVALID_ARGUMENT, str(exc), "page_token") from None
        # One more than asked tells whether another page exists.
        views = await self._store.list_bookings(user_id=user_id, status=status, limit=size + 1, after=after)
        if len(views) <= size:
            return views, ""
        views = views[:size]
        last = views[-1]
        token = self._page_tokens.bookings_token(
            Cursor(last.created_at_us, last.booking_id), user_id=user_id, status=status_key
        )
        return views, token

    async def watch(self, booking_id: str, *, caller: Principal) -> AsyncGenerator[BookingView, None]:
        """The booking now, then after each change; ends once it is settled (CONFIRMED or CANCELLED).

        A CONFIRMED booking may still be cancelled by its user later (``cancel``); the
        watch does not wait for that, because most bookings stay CONFIRMED for good and a
        watch held open on each would hold its slot (and connection) forever. A client that
        cares reads the booking again (or watches it again: a CANCELLED one ends at once).

        Raises:
            GatewayError: NOT_FOUND, RESOURCE_EXHAUSTED (too many watches open), or
                UNAVAILABLE when the gateway shuts down.
        """
        check_id("booking_id", booking_id)
        with self._watch_slot(caller), self._watchers.watch(booking_id) as changed:
            last = await self.get(booking_id, caller=caller)
            yield last
            while not last.is_terminal:
                await changed.wait()
                changed.clear()
                if self._watchers.closed:
                    raise GatewayError(ErrorCode.UNAVAILABLE, "the gateway is shutting down; watch again")
                view = self._watchers.latest(booking_id) or await self._store.get(booking_id)
                if view is not None and view != last:
                    last = view
                    yield view

    async def wait(self, booking_id: str, seconds: float, *, caller: Principal) -> BookingView:
        """The booking once settled (CONFIRMED or CANCELLED), or as it is after ``seconds``.

        Also answers at shutdown. As for ``watch``, CONFIRMED ends the wait though the
        user may cancel the booking later.

        Raises:
            GatewayError: INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED (too many waits open).
        """
        check_id("booking_id", booking_id)
        if not 0 <= seconds <= self.max_wait_seconds:
            raise GatewayError(
                ErrorCode.INVALID_ARGUMENT, f"must be between 0 and {self.max_wait_seconds:g} seconds", "wait"
            )
        with self._watch_slot(caller), self._watchers.watch(booking_id) as changed:
            view = await self.get(booking_id, caller=caller)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while not view.is_terminal and not self._watchers.closed:
                        await changed.wait()
                        changed.clear()
                        view = self._watchers.latest(booking_id) or await self._store.get(booking_id) or view
        return view

    @contextlib.contextmanager
    def _watch_slot(self, caller: Principal) -> Iterator[None]:
        """Holds one of the open watches and waits ``caller`` and the gateway may have."""
        if self._limits is None:
            yield
            return
        with contextlib.ExitStack() as slot:
            try:
                slot.enter_context(self._limits.watching(caller))
            except LimitExceeded as exc:
                raise _exhausted(exc) from None
            yield

    async def trace(
        self,
        *,
        caller: Principal,
        booking_id: str = "",
        correlation_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> TracePage:
        """One page of the workflow's facts; NOT_FOUND when it has none.

        A caller that is not an admin sees a workflow only when every booking in it is its
        own; otherwise it is told NOT_FOUND, as about a workflow without facts.

        Pages follow the store's order of the facts (time, stream, sequence), and each
        page is in causal order; a workflow that fits on one page (all of them, short
        of a forged flood) is in causal order as a whole.

        Raises:
            GatewayError: INVALID_ARGUMENT, NOT_FOUND.
        """
        if booking_id:
            try:
                # As ``get``: another user's booking is answered as late as a missing one.
                view: BookingView | None = await self.get(booking_id, caller=caller)
            except GatewayError as exc:
                if exc.code is not ErrorCode.NOT_FOUND:
                    raise
                view = None
            if view is None or not view.correlation_id:
                raise GatewayError(ErrorCode.NOT_FOUND, f"no facts about booking {booking_id}", "booking_id")
            correlation_id = view.correlation_id
        elif correlation_id:
            check_id("correlation_id", correlation_id)
        else:
            raise GatewayError(
                ErrorCode.INVALID_ARGUMENT, "booking_id or correlation_id is required", "booking_id"
            )
        if not 0 <= page_size <= MAX_TRACE_PAGE_SIZE:
            raise GatewayError(
                ErrorCode.INVALID_ARGUMENT, f"must be between 0 and {MAX_TRACE_PAGE_SIZE}", "page_size"
            )
        size = page_size or DEFAULT_TRACE_PAGE_SIZE
        after: TraceCursor | None = None
        if page_token:
            try:
                after = self._page_tokens.trace_cursor(page_token, correlation_id=correlation_id)
            except InvalidPageToken as exc:
                raise GatewayError(ErrorCode.INVALID_ARGUMENT, str(exc), "page_token") from None
        if not caller.is_admin:
            _, owners = await self._store.correlation_owners(correlation_id)
            if owners != {caller.subject}:
                raise GatewayError(
                    ErrorCode.NOT_FOUND, f"no facts for correlation id {correlation_id}", "correlation_id"
                )
        # One more than asked tells whether another page exists.
        events = await self._store.trace(correlation_id, limit=size + 1, after=after)
        if not events and after is None:
            raise GatewayError(
                ErrorCode.NOT_FOUND, f"no facts for correlation id {correlation_id}", "correlation_id"
            )
        token = ""
        if len(events) > size:
            events = events[:size]
            last = events[-1]
            cursor = TraceCursor(last.occurred_at_us, last.stream, last.stream_sequence, last.event_id)
            token = self._page_tokens.trace_token(cursor, correlation_id=correlation_id)
        return TracePage(correlation_id, causal_order(events), token)


def _exhausted(exc: LimitExceeded) -> GatewayError:
    return GatewayError(ErrorCode.RESOURCE_EXHAUSTED, str(exc), retry_after=exc.retry_after)
