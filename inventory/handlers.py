"""Reserving a booking's units on ``BookingCreated``, freeing them on ``BookingCancelled``.

Each booking that reaches inventory gets one ``reservations`` row, keyed by its id: the
first of its facts to be handled writes it, and every later one finds it. So, in any
order and however many copies arrive:

- ``BookingCreated`` with a ``resource_id``: the reservation row is inserted (a row that
  is already there is a repeat, or the tombstone of a booking cancelled first: nothing
  happens), then the units are taken by one guarded ``UPDATE ... SET reserved = reserved
  + q WHERE reserved + q <= capacity``. The check and the write are one statement, so
  replicas on one PostgreSQL database never over-reserve: a concurrent reservation of the
  same resource waits for the row and re-checks the guard against what committed. It
  moved the row: ``InventoryReserved``. It did not: the row becomes ``REFUSED`` and
  ``InventoryReservationFailed`` (``sold_out``) says how many units were free.
- ``BookingCancelled`` (any reason): with a ``resource_id``, a ``CANCELLED`` tombstone is
  inserted if the booking has no row yet (nothing was reserved; its ``BookingCreated``,
  if it comes later, reserves nothing). Otherwise a ``RESERVED`` row moves to
  ``RELEASED`` (guarded, once), its units go back, and ``InventoryReleased`` carries the
  booking's reason. Anything else (refused, already released) is a no-op.

The booking id's key serialises the reservation and the release of one booking on
PostgreSQL; SQLite writers are serialised anyway (``BEGIN IMMEDIATE``). A fact not
published by booking (``ce-source``), or one inventory cannot record (no booking id, a
resource id outside ``inventory.rules``, no units), is dead-lettered at once.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import BigInteger, bindparam, select, update

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.errors import PermanentError
from choreo.handler import HandlerContext, Route
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.upserts import insert_new
from inventory.rules import RESOURCE_ID_RULE, is_resource_id
from inventory.tables import ReservationState, reservations, resources

log = logging.getLogger(__name__)

#: The durable consumer of booking facts; replicas share it.
DURABLE = "inventory"
#: ``ce-source`` of every genuine booking fact (the booking service's name).
BOOKING_SOURCE = "booking"
#: ``InventoryReservationFailed.reason`` when too few units are free.
SOLD_OUT = "sold_out"
#: The longest booking id the tables hold.
MAX_BOOKING_ID = 64

_DIALECTS = ("sqlite", "postgresql")
_r, _v = resources, reservations
_Q = bindparam("r_q", type_=BigInteger)

# Built once: constructing a statement per event (and its cache key) costs more than running it.
#: A resource seen for the first time, with the default capacity; an existing one is left as it is.
NEW_RESOURCE = {d: insert_new(_r, d, "resource_id") for d in _DIALECTS}
#: A booking's reservation row, unless the booking already has one (a repeat, a tombstone).
NEW_RESERVATION = {d: insert_new(_v, d, "booking_id") for d in _DIALECTS}
#: Takes ``r_q`` units only while they fit: the check and the write are one statement.
TAKE = (
    update(_r)
    .where(_r.c.resource_id == bindparam("r_id"), _r.c.reserved + _Q <= _r.c.capacity)
    .values(reserved=_r.c.reserved + _Q, updated_at_us=bindparam("r_now"))
)
#: Gives ``r_q`` units back (the caller moved their reservation out of RESERVED first).
GIVE_BACK = (
    update(_r)
    .where(_r.c.resource_id == bindparam("r_id"))
    .values(reserved=_r.c.reserved - _Q, updated_at_us=bindparam("r_now"))
)
#: A reservation whose units did not fit.
REFUSE = (
    update(_v)
    .where(_v.c.booking_id == bindparam("b_id"), _v.c.state == ReservationState.RESERVED.value)
    .values(state=ReservationState.REFUSED.value, updated_at_us=bindparam("b_now"))
)
#: RESERVED -> RELEASED, once; returns what to give back.
RELEASE = (
    update(_v)
    .where(_v.c.booking_id == bindparam("b_id"), _v.c.state == ReservationState.RESERVED.value)
    .values(
        state=ReservationState.RELEASED.value, reason=bindparam("b_reason"), updated_at_us=bindparam("b_now")
    )
    .returning(_v.c.resource_id, _v.c.quantity)
)
_AVAILABLE = select(_r.c.capacity - _r.c.reserved).where(_r.c.resource_id == bindparam("r_id"))
_STATE_OF = select(_v.c.state, _v.c.resource_id).where(_v.c.booking_id == bindparam("b_id"))


class ForgedFactError(PermanentError):
    """A booking fact that the booking service did not publish (its ``ce-source``): never acted on."""


class UnusableFactError(PermanentError):
    """A booking fact inventory cannot record (no booking id, an invalid resource id or quantity)."""


def _log_extra(env: Envelope, booking_id: str) -> dict[str, Any]:
    return {"booking_id": booking_id, "correlation_id": env.correlation_id}


def check_fact(env: Envelope, booking_id: str) -> None:
    """Refuses a booking fact that booking did not publish, or that names no usable booking."""
    if env.source != BOOKING_SOURCE:
        message = (
            f"{env.type} {env.id} for booking {booking_id[:80]!r} has ce-source {env.source[:80]!r}, "
            f"not {BOOKING_SOURCE!r}"
        )
        log.error("refused booking fact: %s; dead-lettering it", message, extra=_log_extra(env, booking_id))
        raise ForgedFactError(message)
    if not booking_id or len(booking_id) > MAX_BOOKING_ID:
        raise UnusableFactError(f"{env.type} {env.id}: booking id {booking_id[:80]!r} is empty or too long")


def check_resource(env: Envelope, booking_id: str, resource_id: str) -> None:
    if not is_resource_id(resource_id):
        raise UnusableFactError(
            f"{env.type} {env.id} for booking {booking_id}: resource_id {resource_id[:80]!r} is not "
            f"{RESOURCE_ID_RULE}"
        )


class Inventory:
    """The inventory service's reactions, bound to the capacity of a resource it has never seen.

    Args:
        default_capacity: Units a resource gets when its first booking arrives
            (``INVENTORY_DEFAULT_CAPACITY``).
    """

    def __init__(self, default_capacity: int) -> None:
        self.default_capacity = default_capacity

    async def reserve(self, event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
        """Reserves a resource booking's units once: ``InventoryReserved``, or ``...ReservationFailed``."""
        env = ctx.envelope
        booking_id, resource_id, quantity = event.booking_id, event.resource_id, event.quantity
        check_fact(env, booking_id)
        if not resource_id:
            return  # no resource: payment charges at once, inventory has nothing to do
        check_resource(env, booking_id, resource_id)
        if quantity < 1:
            raise UnusableFactError(
                f"{env.type} {env.id} for booking {booking_id}: quantity {quantity} of {resource_id} "
                "(a booking with a resource reserves at least 1 unit)"
            )
        conn, dialect, now = ctx.conn, ctx.conn.dialect.name, now_us()
        await conn.execute(
            NEW_RESOURCE[dialect],
            {
                "resource_id": resource_id,
                "capacity": self.default_capacity,
                "reserved": 0,
                "updated_at_us": now,
            },
        )
        claimed = await conn.execute(
            NEW_RESERVATION[dialect],
            {
                "booking_id": booking_id,
                "resource_id": resource_id,
                "quantity": quantity,
                "state": ReservationState.RESERVED.value,
                "reason": "",
                "created_at_us": now,
                "updated_at_us": now,
            },
        )
        if claimed.rowcount == 0:
            row = (await conn.execute(_STATE_OF, {"b_id": booking_id})).one_or_none()
            log.info(
                "booking %s already has a reservation (%s): BookingCreated %s reserves nothing",
                booking_id,
                row.state if row is not None else "?",
                env.id,
                extra=_log_extra(env, booking_id),
            )
            return
        taken = await conn.execute(TAKE, {"r_id": resource_id, "r_q": quantity, "r_now": now})
        if taken.rowcount == 1:
            ctx.emit(
                inventory_events.InventoryReserved(
                    booking_id=booking_id,
                    resource_id=resource_id,
                    quantity=quantity,
                    reserved_at=to_timestamp(now),
                )
            )
            log.debug("booking %s reserved %d of %s", booking_id, quantity, resource_id)
            return
        await conn.execute(REFUSE, {"b_id": booking_id, "b_now": now})
        available = max(0, int((await conn.execute(_AVAILABLE, {"r_id": resource_id})).scalar_one()))
        ctx.emit(
            inventory_events.InventoryReservationFailed(
                booking_id=booking_id,
                resource_id=resource_id,
                quantity=quantity,
                reason=SOLD_OUT,
                failed_at=to_timestamp(now),
                available=available,
            )
        )
        log.info(
            "booking %s: %s is sold out (%d asked, %d free)",
            booking_id,
            resource_id,
            quantity,
            available,
            extra=_log_extra(env, booking_id),
        )

    async def release(self, event: booking_events.BookingCancelled, ctx: HandlerContext) -> None:
        """Frees a cancelled booking's reserved units once (``InventoryReleased``), or leaves a tombstone."""
        env = ctx.envelope
        booking_id, resource_id = event.booking_id, event.resource_id
        check_fact(env, booking_id)
        conn, dialect, now = ctx.conn, ctx.conn.dialect.name, now_us()
        if resource_id:
            check_resource(env, booking_id, resource_id)
            tombstone = await conn.execute(
                NEW_RESERVATION[dialect],
                {
                    "booking_id": booking_id,
                    "resource_id": resource_id,
                    "quantity": 0,
                    "state": ReservationState.CANCELLED.value,
                    "reason": event.reason[:128],
                    "created_at_us": now,
                    "updated_at_us": now,
                },
            )
            if tombstone.rowcount:
                log.info(
                    "booking %s was cancelled (%s) before it reserved %s: it never will",
                    booking_id,
                    event.reason,
                    resource_id,
                    extra=_log_extra(env, booking_id),
                )
                return
        # Without a resource_id (a booking that had none, as a rule) only an existing reservation moves.
        moved = (
            await conn.execute(RELEASE, {"b_id": booking_id, "b_reason": event.reason[:128], "b_now": now})
        ).one_or_none()
        if moved is None:
            log.debug("booking %s has no reserved units to release", booking_id)
            return
        reserved_of, quantity = str(moved.resource_id), int(moved.quantity)
        if resource_id and reserved_of != resource_id:
            # Raising rolls the release back: the units stay reserved for an operator to look at.
            raise UnusableFactError(
                f"{env.type} {env.id} for booking {booking_id} names resource {resource_id!r}, "
                f"but the booking reserved {reserved_of!r}"
            )
        await conn.execute(GIVE_BACK, {"r_id": reserved_of, "r_q": quantity, "r_now": now})
        ctx.emit(
            inventory_events.InventoryReleased(
                booking_id=booking_id,
                resource_id=reserved_of,
                quantity=quantity,
                reason=event.reason,
                released_at=to_timestamp(now),
            )
        )
        log.info(
            "booking %s released %d of %s (%s)",
            booking_id,
            quantity,
            reserved_of,
            event.reason,
            extra=_log_extra(env, booking_id),
        )


def routes(inventory: Inventory) -> tuple[Route[Any], ...]:
    """The routes of the ``inventory`` consumer, bound to ``inventory``."""
    return (
        Route(
            booking_events.BookingCreated,
            inventory.reserve,
            emits=(inventory_events.InventoryReserved, inventory_events.InventoryReservationFailed),
        ),
        Route(
            booking_events.BookingCancelled, inventory.release, emits=(inventory_events.InventoryReleased,)
        ),
    )
