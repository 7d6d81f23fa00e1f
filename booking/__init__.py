"""The booking service: owns bookings, starts each workflow, reacts to payments.

It saves a booking as PENDING together with ``BookingCreated`` (outbox), and
turns ``PaymentSucceeded`` / ``PaymentFailed`` into CONFIRMED / CANCELLED,
publishing ``BookingConfirmed`` or the compensating ``BookingCancelled``.
"""
