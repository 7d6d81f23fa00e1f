"""``python -m booking``: runs the booking service."""

from booking.build import build
from booking.settings import BookingSettings
from choreo.service import run_main

if __name__ == "__main__":
    run_main(BookingSettings, build)
