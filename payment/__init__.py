"""The payment service: charges each new booking and says how it went.

It reacts to ``BookingCreated``: charges through a payment-provider adapter
(outside any transaction, idempotent by booking id), then records the payment
and publishes ``PaymentSucceeded`` or ``PaymentFailed`` in one transaction.
"""
