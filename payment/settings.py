"""Configuration of the payment service (environment variables ``PAYMENT_*``)."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from choreo.sealing import TokenOpener, parse_private_keys
from choreo.settings import ConsumerSettings

#: The variable of the keys that open payment tokens; the service refuses to start without it.
PRIVATE_KEY_ENV = "PAYMENT_TOKEN_PRIVATE_KEY"


class PaymentSettings(ConsumerSettings):
    """Payment service settings; see ``choreo.settings.ConsumerSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    service_name: str = "payment"
    database_url: str = "sqlite+aiosqlite:///./var/payment.db"
    health_port: int = 8082
    #: Simulated provider round-trip, to show a payment that takes seconds.
    provider_latency_ms: int = Field(default=0, ge=0, le=600_000)
    #: Where the simulated provider keeps its own ledger (a real PSP keeps it on its side).
    provider_ledger_url: str = "sqlite+aiosqlite:///./var/psp-ledger.db"
    #: X25519 private key(s) that open the payment tokens sealed by booking (base64, from
    #: ``python -m payment.keys``); several comma-separated during a rotation, the current one
    #: first. No default: the service refuses to start without it.
    token_private_key: SecretStr | None = None

    @field_validator("token_private_key")
    @classmethod
    def _check_private_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_private_keys(value.get_secret_value())
        return value

    def token_opener(self) -> TokenOpener:
        """What opens sealed payment tokens; ``SettingsError`` naming the variable when unset."""
        if self.token_private_key is None or not self.token_private_key.get_secret_value().strip():
            raise SettingsError(
                f"{PRIVATE_KEY_ENV} is not set: payment opens the payment tokens booking sealed to its "
                "key (make a key pair with `python -m payment.keys`)"
            )
        keys = parse_private_keys(self.token_private_key.get_secret_value())
        return TokenOpener(keys, keys_from=f"{PRIVATE_KEY_ENV}'s keys")
