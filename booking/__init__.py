"""The booking service: owns bookings, starts each workflow, and ends it every way a booking ends.

It saves a booking as PENDING together with ``BookingCreated`` (outbox), and
turns ``PaymentSucceeded`` / ``PaymentFailed`` into CONFIRMED / CANCELLED,
publishing ``BookingConfirmed`` or the compensating ``BookingCancelled``. It also
cancels a booking when inventory has no units left for it (``booking.sold_out``),
when its user asks (``booking.cancel``) and when its payment does not answer in
time (``booking.timeouts``); each ``BookingCancelled`` names the booking's payment
and resource, so that payment refunds and inventory releases.
"""
