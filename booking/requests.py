"""Validation of a booking request, shared by the gateway and the booking service.

The gateway checks first so a bad request fails fast even while the booking
service is down; the booking service checks again because it must not trust
its callers. Both use this one definition, so they can never disagree. It is
part of booking's contract, not of the runtime: a pure module (no database, no
NATS), which the gateway imports as it imports booking's protobuf messages.
"""

from __future__ import annotations

import re

from choreo.validation import FieldError, check_email, check_id, check_name

#: The largest amount accepted, in minor units (10,000,000.00).
MAX_AMOUNT_CENTS = 1_000_000_000
_CURRENCY = re.compile(r"[A-Z]{3}")
_TOKEN = re.compile(r"tok_[A-Za-z0-9]{1,120}")
#: The longest resource id (inventory's key, named by its operator).
MAX_RESOURCE_ID = 64
#: The most units one booking may reserve.
MAX_QUANTITY = 1000


def validate_booking_request(
    user_id: str,
    amount_cents: int,
    currency: str,
    payment_token: str,
    idempotency_key: str = "",
    email: str = "",
    resource_id: str = "",
    quantity: int = 0,
) -> FieldError | None:
    """Returns the first invalid field of a booking request, or ``None``.

    ``resource_id`` is optional (no reservation); ``quantity`` counts its units, 0 meaning 1,
    and may only be given with a resource.
    """
    error = check_id("user_id", user_id, required=True)
    if error:
        return error
    if amount_cents <= 0:
        return FieldError("amount_cents", "must be a positive number of minor units (cents)")
    if amount_cents > MAX_AMOUNT_CENTS:
        return FieldError("amount_cents", f"must be at most {MAX_AMOUNT_CENTS}")
    if not _CURRENCY.fullmatch(currency):
        return FieldError("currency", "must be a three-letter ISO 4217 code in upper case, like USD")
    if not payment_token:
        return FieldError("payment_token", "is required")
    if not _TOKEN.fullmatch(payment_token):
        return FieldError("payment_token", "must look like tok_<letters and digits>")
    error = check_id("idempotency_key", idempotency_key, required=False)
    if error:
        return error
    # Optional: without an address no emails are sent.
    error = check_email("email", email, required=False)
    if error:
        return error
    return check_resource(resource_id, quantity)


def check_resource(resource_id: str, quantity: int) -> FieldError | None:
    """The error of a request's resource and quantity (both optional), or ``None``."""
    error = check_name("resource_id", resource_id, max_length=MAX_RESOURCE_ID, required=False)
    if error:
        return error
    if quantity < 0 or quantity > MAX_QUANTITY:
        return FieldError("quantity", f"must be between 0 and {MAX_QUANTITY} (0 means 1)")
    if quantity and not resource_id:
        return FieldError("quantity", "is only allowed with a resource_id")
    return None
