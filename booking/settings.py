"""Configuration of the booking service (environment variables ``BOOKING_*``)."""

from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class BookingSettings(ServiceSettings):
    """Booking service settings; see ``choreo.settings.ServiceSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore", frozen=True)

    service_name: str = "booking"
    database_url: str = "sqlite+aiosqlite:///./var/booking.db"
    health_port: int = 8081
    #: Most create commands committed in one transaction.
    command_batch_size: int = 256
