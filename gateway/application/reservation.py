"""Validation of a booking request's reservation: ``resource_id`` and ``quantity``.

The rules are the ones the booking service applies (issue 12's design): the gateway
checks first, so a bad request fails fast with the field named even while booking
is down. They belong with ``booking.requests.validate_booking_request`` (one
definition for both); until booking's module carries them, this is the gateway's copy.
"""

from __future__ import annotations

import re

from choreo.validation import FieldError

#: Longest resource id.
MAX_RESOURCE_ID_LENGTH = 64
#: Most units one booking may reserve.
MAX_QUANTITY = 1000
_RESOURCE_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_RESOURCE_ID_LENGTH}}}")


def validate_reservation(resource_id: str, quantity: int) -> FieldError | None:
    """The first invalid field of a reservation (both optional), or ``None``.

    ``quantity`` 0 means 1 unit; it may be given only with a ``resource_id``.
    """
    if resource_id and not _RESOURCE_ID.fullmatch(resource_id):
        return FieldError(
            "resource_id", f"must be 1 to {MAX_RESOURCE_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -"
        )
    if not 0 <= quantity <= MAX_QUANTITY:
        return FieldError("quantity", f"must be between 0 and {MAX_QUANTITY} (0 means 1)")
    if quantity and not resource_id:
        return FieldError("quantity", "may only be given with a resource_id")
    return None
