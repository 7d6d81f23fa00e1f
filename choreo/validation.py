"""Validation of a booking request, shared by the gateway and the booking service.

The gateway checks first so a bad request fails fast even while the booking
service is down; the booking service checks again because it must not trust
its callers. Both use this one definition, so they can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_LENGTH = 128
#: The largest amount accepted, in minor units (10,000,000.00).
MAX_AMOUNT_CENTS = 1_000_000_000
_CURRENCY = re.compile(r"[A-Z]{3}")
_TOKEN = re.compile(r"tok_[A-Za-z0-9]{1,120}")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class FieldError:
    """A request field that failed validation."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_id(name: str, value: str, *, required: bool = True) -> FieldError | None:
    """The error of an identifier field (at most 128 printable ASCII characters), or ``None``."""
    if not value:
        return FieldError(name, "is required") if required else None
    if len(value) > MAX_ID_LENGTH:
        return FieldError(name, f"must be at most {MAX_ID_LENGTH} characters")
    if not _PRINTABLE.fullmatch(value):
        return FieldError(name, "must be printable ASCII without spaces")
    return None


def validate_booking_request(
    user_id: str, amount_cents: int, currency: str, payment_token: str, idempotency_key: str = ""
) -> FieldError | None:
    """Returns the first invalid field of a booking request, or ``None``."""
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
    return check_id("idempotency_key", idempotency_key, required=False)
