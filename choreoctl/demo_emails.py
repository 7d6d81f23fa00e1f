"""The emails of ``choreo up --demo``'s bookings, read from the SMTP sink's ``.eml`` files.

Each demo booking carries an address, so the notification service sends two
emails for it: "we received your booking" on ``BookingCreated``, then one on
``BookingConfirmed`` or ``BookingCancelled``. They are found by their
``X-Choreo-Booking-Id`` header in ``DIR/mail`` (``choreoctl.stack.mailsink``),
waiting a little for the last ones: the emails follow the outcome, they do not
precede it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from pathlib import Path

from choreoctl.stack.mailroute import HOST_VARIABLE, MailRoute
from choreoctl.stack.mailsink import MailStore, StoredMail, read_headers

#: The address of every demo booking (example.com: a domain that receives no mail).
DEMO_EMAIL = "demo@example.com"
#: Emails a demo booking causes: received, then confirmed or cancelled.
EMAILS_PER_BOOKING = 2
#: Seconds to wait for the last emails once every booking has its outcome.
EMAIL_TIMEOUT = 15.0


async def collect_emails(
    mail_dir: Path,
    booking_ids: Collection[str],
    *,
    expected: int = EMAILS_PER_BOOKING,
    timeout: float = EMAIL_TIMEOUT,
    interval: float = 0.1,
) -> dict[str, list[StoredMail]]:
    """The stored emails of each booking, in arrival order.

    Waits up to ``timeout`` seconds until each booking has ``expected`` emails;
    returns what there is then.
    """
    store = MailStore(mail_dir)
    seen: dict[Path, StoredMail] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wanted = set(booking_ids)
    while True:
        for path in store.paths():
            if path not in seen:
                with contextlib.suppress(FileNotFoundError):  # removed since it was listed
                    seen[path] = await asyncio.to_thread(read_headers, path)
        found: dict[str, list[StoredMail]] = {booking_id: [] for booking_id in booking_ids}
        for path in sorted(seen):
            mail = seen[path]
            if mail.booking_id in wanted:
                found[mail.booking_id].append(mail)
        if all(len(mails) >= expected for mails in found.values()) or loop.time() >= deadline:
            return found
        await asyncio.sleep(interval)


def printable(text: str) -> str:
    """``text`` without what a terminal would act on (a decoded header may hold escape sequences)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def describe_emails(
    subjects: list[str] | None, expected: int = EMAILS_PER_BOOKING, *, booking_id: str = ""
) -> str:
    """The table cell of one booking's emails: their subjects (its id, in the row already, as …)."""
    if subjects is None:
        return "-"
    short = [s.replace(booking_id, "…") if booking_id else s for s in subjects]
    shown = " | ".join(printable(s) for s in short) if subjects else "none"
    if len(subjects) < expected:
        return f"{shown} (expected {expected})"
    return shown


async def subjects_by_booking(
    mail: MailRoute | None, booking_ids: Collection[str], timeout: float = EMAIL_TIMEOUT
) -> dict[str, list[str]] | None:
    """Each booking's email subjects from the sink; ``None`` when emails are not kept here."""
    if mail is None or mail.mail_dir is None:
        return None
    found = await collect_emails(mail.mail_dir, booking_ids, timeout=timeout)
    return {booking_id: [m.subject for m in mails] for booking_id, mails in found.items()}


def mail_note(mail: MailRoute) -> str:
    """Where the demo's emails are, for the line under the table."""
    if mail.mail_dir is None:
        return f"Emails went to the SMTP server {mail.server} ({HOST_VARIABLE}); look for them there."
    return f"Emails: {mail.mail_dir} (one .eml per email, from the SMTP sink at {mail.server})."
