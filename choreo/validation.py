"""Field errors, and the check of an identifier field, for services that validate requests.

A service's own request rules live with the service (``booking.requests``); what
they share is how an invalid field is reported (``FieldError``, naming the field)
and what an identifier may be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_LENGTH = 128
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
