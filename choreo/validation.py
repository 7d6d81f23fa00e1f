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
#: A name's characters: safe in a subject token, a URL path segment, a log line and a table key.
NAME_CHARACTERS = "A-Z a-z 0-9 . _ : -"
_NAME = re.compile(r"[A-Za-z0-9._:-]+")
#: Longest address SMTP carries (RFC 5321 4.5.3.1.3: a 256-octet path, less its brackets).
MAX_EMAIL_LENGTH = 254
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A dot-atom local part (at most 64 characters) at a domain name with a dot: what mail
#: servers accept everywhere. Quoted local parts, IP literals and non-ASCII addresses
#: (SMTPUTF8) are refused; nothing that could end a mail header (CR, LF) gets through.
_EMAIL = re.compile(rf"(?=[^@]{{1,64}}@){_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")


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


def check_name(name: str, value: str, *, max_length: int, required: bool = True) -> FieldError | None:
    """The error of a name field (1 to ``max_length`` of ``NAME_CHARACTERS``), or ``None``."""
    if not value:
        return FieldError(name, "is required") if required else None
    if len(value) > max_length or not _NAME.fullmatch(value):
        return FieldError(name, f"must be 1 to {max_length} characters of {NAME_CHARACTERS}")
    return None


def check_email(name: str, value: str, *, required: bool = True) -> FieldError | None:
    """The error of an email address field (one plain address, never a list or a header), or ``None``."""
    if not value:
        return FieldError(name, "is required") if required else None
    if len(value) > MAX_EMAIL_LENGTH:
        return FieldError(name, f"must be at most {MAX_EMAIL_LENGTH} characters")
    if not _EMAIL.fullmatch(value):
        return FieldError(name, "must be an email address like name@example.com (ASCII, no display name)")
    return None
