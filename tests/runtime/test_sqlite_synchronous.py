"""SQLite commits are on disk before the ack or reply that follows them (``synchronous=FULL``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo.db import durability_settings, make_engine
from choreo.service import load_settings
from choreo.settings import ServiceSettings
from choreoctl.bench.durability import database_settings


class DemoSettings(ServiceSettings):
    model_config = {**ServiceSettings.model_config, "env_prefix": "DEMO_"}


async def synchronous_of(url: str, **kwargs: str) -> str:
    engine = make_engine(url, **kwargs)  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            return (await durability_settings(conn))["synchronous"]
    finally:
        await engine.dispose()


async def test_a_service_database_fsyncs_every_commit_by_default(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    assert await synchronous_of(url) == "FULL"
    assert ServiceSettings().sqlite_synchronous == "FULL"


async def test_normal_is_a_choice(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    assert await synchronous_of(url, synchronous="NORMAL") == "NORMAL"
    with pytest.raises(ValueError, match="synchronous must be one of"):
        make_engine(url, synchronous="OFF")


def test_the_setting_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_SQLITE_SYNCHRONOUS", "normal")
    assert load_settings(DemoSettings).sqlite_synchronous == "NORMAL"
    monkeypatch.setenv("DEMO_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(SystemExit) as exited:
        load_settings(DemoSettings)
    assert "DEMO_SQLITE_SYNCHRONOUS" in str(exited.value)


async def test_the_benchmark_reports_what_the_services_use(tmp_path: Path) -> None:
    urls = {name: f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}" for name in ("booking", "payment")}
    reported = await database_settings(urls, {"PAYMENT_SQLITE_SYNCHRONOUS": "NORMAL"})
    assert reported["booking"]["synchronous"] == "FULL"
    assert reported["payment"]["synchronous"] == "NORMAL"
