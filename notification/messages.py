"""The emails: what each one says, as a plain-text and an HTML part (``email.message.EmailMessage``).

Every value that comes from a fact is HTML-escaped in the HTML part. The
``Message-ID`` is derived from the ``ce-id`` of the fact that caused the email,
so the same fact always makes the same ``Message-ID``: a resend after a crash is
recognisable by the receiving side.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from choreo.notification.v1 import events_pb2 as notification_events
from choreo.validation import check_email

Kind = notification_events.NotificationKind

#: Header naming the booking an email is about.
H_BOOKING_ID = "X-Choreo-Booking-Id"
#: Header naming the workflow (correlation id) that caused the email.
H_CORRELATION_ID = "X-Choreo-Correlation-Id"

#: Cancellation reasons in words; any other code is shown with its underscores as spaces.
REASONS: dict[str, str] = {
    "card_declined": "your card was declined",
    "insufficient_funds": "your card has insufficient funds",
    "invalid_payment_token": "the payment details could not be used",
    "sold_out": "it is sold out",
    "cancelled_by_user": "you cancelled it",
    "payment_timeout": "the payment did not complete in time",
}

#: ISO 4217 currencies without minor units (their amounts are already whole).
_ZERO_DECIMALS = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND"}
)
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def is_deliverable(address: str) -> bool:
    """Whether ``address`` is one plain address this service sends to (never a list, never a header).

    The rule booking applies to ``email`` (``choreo.validation.check_email``), checked again
    here: a fact may come from a publisher that did not check it.
    """
    return check_email("email", address) is None


def reason_in_words(reason: str) -> str:
    """A cancellation reason code as a user reads it (``card_declined`` -> "your card was declined")."""
    code = reason.strip()
    if not code:
        return "no reason was given"
    return REASONS.get(code, code.replace("_", " "))


def format_amount(amount_cents: int, currency: str) -> str:
    """``2500, "EUR"`` -> ``"25.00 EUR"`` (whole units for currencies without minor units)."""
    if currency.upper() in _ZERO_DECIMALS:
        return f"{amount_cents} {currency}"
    sign = "-" if amount_cents < 0 else ""
    units, cents = divmod(abs(amount_cents), 100)
    return f"{sign}{units}.{cents:02d} {currency}"


def message_id_for(fact_id: str, domain: str) -> str:
    """The ``Message-ID`` of the email caused by fact ``fact_id``: the same fact, the same id."""
    return f"<{_ID_CHARS.sub('-', fact_id)}@{domain}>"


@dataclass(frozen=True, slots=True)
class Letter:
    """One email about a booking, before it is put into MIME form.

    Attributes:
        kind: Which email of the booking's life.
        booking_id: The booking it is about.
        recipient: The ``To`` address.
        amount_cents: The booking's price in minor units.
        currency: Its currency.
        reason: Why it was cancelled (a code), for a cancellation.
    """

    kind: Kind.ValueType
    booking_id: str
    recipient: str
    amount_cents: int
    currency: str
    reason: str = ""

    def subject(self) -> str:
        return {
            Kind.NOTIFICATION_KIND_BOOKING_RECEIVED: f"We received your booking {self.booking_id}",
            Kind.NOTIFICATION_KIND_BOOKING_CONFIRMED: f"Your booking {self.booking_id} is confirmed",
            Kind.NOTIFICATION_KIND_BOOKING_CANCELLED: f"Your booking {self.booking_id} was cancelled",
        }[self.kind]

    def paragraphs(self) -> list[str]:
        """The body, one paragraph per item, as plain text (escaped for the HTML part later)."""
        # The amount is unknown (no currency) for a booking rebuilt by replay (notification.recovery).
        booking = self.booking_id
        if self.currency:
            booking += f" for {format_amount(self.amount_cents, self.currency)}"
        if self.kind == Kind.NOTIFICATION_KIND_BOOKING_RECEIVED:
            lines = [
                f"We received your booking {booking}.",
                "We are taking the payment now; you will get another email when it is settled.",
            ]
        elif self.kind == Kind.NOTIFICATION_KIND_BOOKING_CONFIRMED:
            lines = [f"Your booking {booking} is confirmed: the payment went through."]
        else:
            lines = [f"Your booking {booking} was cancelled: {reason_in_words(self.reason)}."]
        return ["Hello,", *lines, "This email was sent automatically; please do not reply to it."]


def compose(letter: Letter, *, sender: str, message_id: str, correlation_id: str) -> EmailMessage:
    """The email of ``letter``: a plain-text part and an HTML alternative, with the choreo headers."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = letter.recipient
    msg["Subject"] = letter.subject()
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg[H_BOOKING_ID] = letter.booking_id
    msg[H_CORRELATION_ID] = correlation_id
    paragraphs = letter.paragraphs()
    msg.set_content("\n\n".join(paragraphs) + "\n")
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    title = html.escape(letter.subject())
    msg.add_alternative(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n{body}\n</body></html>\n",
        subtype="html",
    )
    return msg
