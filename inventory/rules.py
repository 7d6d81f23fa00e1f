"""What a resource id and a capacity may be: one rule for the handlers, the operator's commands and recovery.

A resource id is 1 to 64 characters of ``[A-Za-z0-9._:-]``, the same rule booking and
the gateway apply to a request's ``resource_id`` (issue 12's design): inventory checks
again because it must not trust a fact's publisher, and a longer id would not fit its
tables. A capacity is a whole number of units from 0 (nothing can be booked) to
``MAX_CAPACITY``.
"""

from __future__ import annotations

from choreo.validation import NAME_CHARACTERS, check_name

MAX_RESOURCE_ID = 64
MAX_CAPACITY = 1_000_000_000
#: How a valid resource id looks, for error messages.
RESOURCE_ID_RULE = f"1 to {MAX_RESOURCE_ID} characters of {NAME_CHARACTERS}"


def is_resource_id(value: str) -> bool:
    """Whether ``value`` is a valid resource id (``choreo.validation.check_name``)."""
    return check_name("resource_id", value, max_length=MAX_RESOURCE_ID) is None


def is_capacity(value: int) -> bool:
    """Whether ``value`` is a capacity an operator may set."""
    return 0 <= value <= MAX_CAPACITY
