"""Analytics' settings: the names pinned by the issue, read from ``ANALYTICS_*`` only."""

from __future__ import annotations

import os

import pytest

from analytics.settings import AnalyticsSettings
from choreo.settings import ConsumerSettings, UnknownVariablesError


def test_defaults_are_the_pinned_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ANALYTICS_")]:
        monkeypatch.delenv(name)
    s = AnalyticsSettings()
    assert isinstance(s, ConsumerSettings)
    assert (s.service_name, s.health_port, s.database_url) == (
        "analytics",
        8084,
        "sqlite+aiosqlite:///./var/analytics.db",
    )


def test_variables_are_read_with_the_analytics_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_DATABASE_URL", "postgresql+asyncpg://analytics@db/analytics")
    monkeypatch.setenv("ANALYTICS_QUERY_BATCH_SIZE", "8")
    monkeypatch.setenv("PAYMENT_DATABASE_URL", "sqlite+aiosqlite:///./var/other.db")  # another service's
    s = AnalyticsSettings()
    assert (s.database_url, s.query_batch_size) == ("postgresql+asyncpg://analytics@db/analytics", 8)


def test_a_variable_naming_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_QUERY_BATCH_SIZ", "8")
    with pytest.raises(UnknownVariablesError, match="did you mean ANALYTICS_QUERY_BATCH_SIZE"):
        AnalyticsSettings()
