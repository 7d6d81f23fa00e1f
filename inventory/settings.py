"""Configuration of the inventory service (environment variables ``INVENTORY_*``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from choreo.settings import ConsumerSettings
from inventory.rules import MAX_CAPACITY


class InventorySettings(ConsumerSettings):
    """Inventory service settings; see ``choreo.settings.ConsumerSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore", frozen=True)

    service_name: str = "inventory"
    database_url: str = "sqlite+aiosqlite:///./var/inventory.db"
    health_port: int = 8085
    #: Units of a resource the service has never seen (no operator set its capacity): it gets
    #: them when its first booking arrives, and keeps them until an operator sets another.
    default_capacity: int = Field(default=100, ge=0, le=MAX_CAPACITY)
