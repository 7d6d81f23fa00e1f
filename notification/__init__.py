"""The notification service: emails the user about their booking, over SMTP.

It reacts to ``BookingCreated`` ("we received your booking"), ``BookingConfirmed``
and ``BookingCancelled`` (with the reason in words). Each email is sent in the
route's ``prepare`` step, before the handler's transaction (like payment's
charge); the transaction records it and publishes ``NotificationSent`` (sent,
skipped or refused) on the NOTIFICATION stream, so a workflow's trace shows its
emails. An email's ``Message-ID`` is derived from the fact that caused it: a
resend after a crash between the send and the commit carries the same one.
"""
