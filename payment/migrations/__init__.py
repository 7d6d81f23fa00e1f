"""The payment service's tables and their revisions (``versions/``, Alembic branch ``payment``).

The simulated provider's ledger is not here: it is the provider's database, not payment's.
"""

from pathlib import Path

from choreo.schema import Migrations
from payment.settings import PaymentSettings
from payment.tables import cancellations, payment_requests, payments

MIGRATIONS = Migrations(
    "payment", Path(__file__).parent / "versions", (payments, payment_requests, cancellations)
)

#: Where ``python -m choreo.migrate payment`` reads the database URL from.
SETTINGS = PaymentSettings
