"""The inventory service's own tables.

``resources`` holds each resource's capacity and the units reserved from it; its
``reserved`` moves only through the guarded statements of ``inventory.handlers``.
``reservations`` holds one row per booking that reached inventory (its key is the
booking id): the row makes a reservation happen once whatever the order its facts
arrive in, and a ``CANCELLED`` row is the tombstone of a booking cancelled before
its ``BookingCreated`` was handled (a later ``BookingCreated`` reserves nothing).
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field, SQLModel

from choreo.db import big_int


class ReservationState(StrEnum):
    """What became of a booking's units."""

    #: The units are set aside (``InventoryReserved``).
    RESERVED = "RESERVED"
    #: Too few units were free (``InventoryReservationFailed``); nothing was set aside.
    REFUSED = "REFUSED"
    #: The booking was cancelled after its units were reserved; they are free again (``InventoryReleased``).
    RELEASED = "RELEASED"
    #: The booking was cancelled before inventory saw it created: nothing will be reserved for it.
    CANCELLED = "CANCELLED"


class ResourceRow(SQLModel, table=True):
    """A resource: how many units it has, and how many are reserved."""

    __tablename__ = "resources"

    resource_id: str = Field(primary_key=True, max_length=64)
    #: Units that may be reserved at once; an operator may lower it below ``reserved``
    #: (nothing new is reserved until enough is released).
    capacity: int = big_int()
    reserved: int = big_int()
    updated_at_us: int = big_int()


class ReservationRow(SQLModel, table=True):
    """What inventory did for one booking."""

    __tablename__ = "reservations"

    booking_id: str = Field(primary_key=True, max_length=64)
    resource_id: str = Field(max_length=64, index=True)
    #: Units asked for (0 for a tombstone).
    quantity: int
    #: ``ReservationState``.
    state: str = Field(max_length=16)
    #: The booking's cancellation reason, once released or cancelled.
    reason: str = Field(default="", max_length=128)
    created_at_us: int = big_int()
    updated_at_us: int = big_int()


resources = ResourceRow.__table__  # type: ignore[attr-defined]
reservations = ReservationRow.__table__  # type: ignore[attr-defined]
