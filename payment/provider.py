"""The payment-provider adapter interface.

The payment service talks to a provider (a PSP) only through this interface,
so a real PSP client can replace the simulator without touching the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A charge to make.

    Attributes:
        idempotency_key: The provider charges at most once per key; the booking id.
        amount_cents: Amount in minor units.
        currency: ISO 4217 code.
        payment_token: The customer's tokenized payment method.
    """

    idempotency_key: str
    amount_cents: int
    currency: str
    payment_token: str


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """What the provider did.

    Attributes:
        charge_id: The provider's id of the charge attempt.
        succeeded: True when the money was taken.
        failure_reason: Why not, e.g. ``card_declined``; empty on success.
        replayed: True when the provider answered from an earlier call with the same key.
    """

    charge_id: str
    succeeded: bool
    failure_reason: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A full refund of the charge made under ``charge_key``.

    Attributes:
        charge_key: The idempotency key the charge was made with (the booking id).
        idempotency_key: The refund's own key: the provider refunds at most once per key.
    """

    charge_key: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RefundResult:
    """What the provider did about a refund.

    Attributes:
        refunded: True when a succeeded charge exists under the key and is now refunded
            (by this call or an earlier one); False when no succeeded charge exists
            (none was made, or it was declined): there is nothing to give back.
        refund_id: The provider's id of the refund (empty when nothing was refunded).
        charge_id: The refunded charge (empty when nothing was refunded).
        amount_cents: Amount given back, in minor units (the whole charge).
        currency: ISO 4217 code of the charge.
        replayed: True when the provider answered with a refund made earlier.
    """

    refunded: bool
    refund_id: str = ""
    charge_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    replayed: bool = False


class PaymentProvider(Protocol):
    """A payment provider (PSP)."""

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charges the amount, or returns the result of the earlier call with the same key.

        A decline is a result, not an error. An adapter raises
        ``choreo.errors.TransientError`` when the provider cannot answer now (5xx, timeout,
        rate limit): the fact is retried with backoff for as long as that lasts, and the
        idempotency key makes each retry safe. It raises ``choreo.errors.PermanentError``
        for a request the provider will never accept (e.g. a malformed one): the fact goes
        to the DLQ at once.
        """
        ...

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refunds the succeeded charge made under ``request.charge_key`` in full, at most once.

        A repeated call (same key, or another key for an already refunded charge) answers
        with the first refund; a key without a succeeded charge answers ``refunded=False``
        and changes nothing. Errors as for ``charge``.
        """
        ...

    async def close(self) -> None:
        """Releases connections."""
        ...
