"""Configuration of the payment service (environment variables ``PAYMENT_*``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    """Payment service settings; see ``choreo.settings.ServiceSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    service_name: str = "payment"
    database_url: str = "sqlite+aiosqlite:///./var/payment.db"
    health_port: int = 8082
    #: Simulated provider round-trip, to show a payment that takes seconds.
    provider_latency_ms: int = Field(default=0, ge=0, le=600_000)
    #: Where the simulated provider keeps its own ledger (a real PSP keeps it on its side).
    provider_ledger_url: str = "sqlite+aiosqlite:///./var/psp-ledger.db"
