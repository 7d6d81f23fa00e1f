"""The payment service: charges each booking once, refunds a cancelled one, and says how it went.

A booking without a resource is charged on its ``BookingCreated``; one with a
resource when inventory reports its units reserved (``InventoryReserved``). The
charge goes through a payment-provider adapter (outside any transaction,
idempotent by booking id), then the payment is recorded and ``PaymentSucceeded`` or
``PaymentFailed`` published in one transaction. ``BookingCancelled`` stops any later
charge and refunds a captured one once (``PaymentRefunded``). See ``payment.handlers``.
"""
