"""Validation of a booking request, shared by the gateway and the booking service.

The gateway checks first so a bad request fails fast even while the booking
service is down; the booking service checks again because it must not trust
its callers. Both use this one definition, so they can never disagree. It is
part of booking's contract, not of the runtime: a pure module (no database, no
NATS), which the gateway imports as it imports booking's protobuf messages.
"""

from __future__ import annotations

import re

from choreo.validation import FieldError, check_id

#: The largest amount accepted, in minor units (10,000,000.00).
MAX_AMOUNT_CENTS = 1_000_000_000
_CURRENCY = re.compile(r"[A-Z]{3}")
_TOKEN = re.compile(r"tok_[A-Za-z0-9]{1,120}")
#: Longest address SMTP carries (RFC 5321 4.5.3.1.3: a 256-octet path, less its brackets).
MAX_EMAIL_LENGTH = 254
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A dot-atom local part (at most 64 characters) at a domain name with a dot: what mail
#: servers accept everywhere. Quoted local parts, IP literals and non-ASCII addresses
#: (SMTPUTF8) are refused; nothing that could end a mail header (CR, LF) gets through.
_EMAIL = re.compile(rf"(?=[^@]{{1,64}}@){_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")


def validate_booking_request(
    user_id: str,
    amount_cents: int,
    currency: str,
    payment_token: str,
    idempotency_key: str = "",
    email: str = "",
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
    error = check_id("idempotency_key", idempotency_key, required=False)
    if error:
        return error
    return check_email(email)


def check_email(email: str) -> FieldError | None:
    """The error of the optional ``email`` field, or ``None`` (empty: no emails are sent)."""
    if not email:
        return None
    if len(email) > MAX_EMAIL_LENGTH:
        return FieldError("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    if not _EMAIL.fullmatch(email):
        return FieldError("email", "must be an email address like name@example.com (ASCII, no display name)")
    return None
