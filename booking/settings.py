"""Configuration of the booking service (environment variables ``BOOKING_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from choreo.sealing import TokenSealer, parse_public_key
from choreo.settings import ConsumerSettings

#: How long a booking waits for its payment by default (``BOOKING_PAYMENT_TIMEOUT_SECONDS``).
DEFAULT_PAYMENT_TIMEOUT_SECONDS = 300

#: The variable of the key payment tokens are sealed to; the service refuses to start without it.
PUBLIC_KEY_ENV = "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"


class BookingSettings(ConsumerSettings):
    """Booking service settings; see ``choreo.settings.ConsumerSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore", frozen=True)

    service_name: str = "booking"
    database_url: str = "sqlite+aiosqlite:///./var/booking.db"
    health_port: int = 8081
    #: Most create commands committed in one transaction.
    command_batch_size: int = 256
    #: Seconds a booking may stay PENDING after its creation before it is CANCELLED with
    #: reason ``payment_timeout`` (``booking.timeouts``; ``BOOKING_PAYMENT_TIMEOUT_SECONDS``).
    payment_timeout_seconds: int = Field(default=DEFAULT_PAYMENT_TIMEOUT_SECONDS, ge=1)
    #: The payment service's X25519 public key (base64, from ``python -m payment.keys``):
    #: payment tokens are sealed to it before they leave this service (``choreo.sealing``).
    #: No default: the service refuses to start without it (migrations and recovery do not need it).
    payment_token_public_key: str | None = None

    @field_validator("payment_token_public_key")
    @classmethod
    def _check_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_public_key(value)
        return value.strip()

    @model_validator(mode="after")
    def _check_the_timeout_outlives_nothing(self) -> BookingSettings:
        # The timeout waits in JetStream as booking's own BookingCreated: a stream that drops
        # it first (its age limit) would leave the booking PENDING for ever.
        age = self.stream_max_age_seconds
        if age and age <= self.payment_timeout_seconds:
            raise ValueError(
                f"BOOKING_STREAM_MAX_AGE_SECONDS ({age:g}) must be longer than "
                f"BOOKING_PAYMENT_TIMEOUT_SECONDS ({self.payment_timeout_seconds}): a booking's payment "
                "timeout waits in the BOOKING stream until it is due"
            )
        return self

    def token_sealer(self) -> TokenSealer:
        """What seals payment tokens; ``SettingsError`` naming the variable when the key is unset."""
        if not self.payment_token_public_key:
            raise SettingsError(
                f"{PUBLIC_KEY_ENV} is not set: booking seals payment tokens to the payment service's "
                "public key (make a key pair with `python -m payment.keys`)"
            )
        return TokenSealer(parse_public_key(self.payment_token_public_key))
