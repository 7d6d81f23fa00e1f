"""``python -m payment``: runs the payment service."""

from choreo.service import run_main
from payment.build import build
from payment.settings import PaymentSettings

if __name__ == "__main__":
    run_main(PaymentSettings, build)
