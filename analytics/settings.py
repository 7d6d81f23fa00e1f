"""Configuration of the analytics service (environment variables ``ANALYTICS_*``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from choreo.settings import ConsumerSettings


class AnalyticsSettings(ConsumerSettings):
    """Analytics service settings; see ``choreo.settings.ConsumerSettings`` for the common ones.

    It owns no stream, so the ``STREAM_*`` limits are not used.
    """

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    service_name: str = "analytics"
    database_url: str = "sqlite+aiosqlite:///./var/analytics.db"
    health_port: int = 8084
    #: Most stats queries answered in one batch (``choreo.commands.CommandServer``). A batch's
    #: replies leave together, after its last query: reads gain nothing from group commit, so 1
    #: answers each query as soon as it is computed.
    query_batch_size: int = Field(default=1, ge=1, le=10_000)
