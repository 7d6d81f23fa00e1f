"""Inventory's settings: the pinned names, read from ``INVENTORY_*`` only; a wrong one stops it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from choreo.settings import ConsumerSettings, UnknownVariablesError
from inventory.settings import InventorySettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("INVENTORY_"):
            monkeypatch.delenv(name)
    yield


def test_defaults_are_the_pinned_ones() -> None:
    s = InventorySettings()
    assert isinstance(s, ConsumerSettings)
    assert (s.service_name, s.health_port, s.database_url, s.default_capacity) == (
        "inventory",
        8085,
        "sqlite+aiosqlite:///./var/inventory.db",
        100,
    )


def test_variables_are_read_with_the_inventory_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVENTORY_DATABASE_URL", "postgresql+asyncpg://inventory@db/inventory")
    monkeypatch.setenv("INVENTORY_DEFAULT_CAPACITY", "0")
    monkeypatch.setenv("PAYMENT_DATABASE_URL", "sqlite+aiosqlite:///./var/other.db")  # another service's
    s = InventorySettings()
    assert (s.database_url, s.default_capacity) == ("postgresql+asyncpg://inventory@db/inventory", 0)


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "1000000001"])
def test_a_wrong_default_capacity_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INVENTORY_DEFAULT_CAPACITY", value)
    with pytest.raises(ValidationError) as refused:
        InventorySettings()
    assert refused.value.errors()[0]["loc"] == ("default_capacity",)


def test_a_variable_naming_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVENTORY_DEFAULT_CAPACTY", "8")
    with pytest.raises(UnknownVariablesError, match="did you mean INVENTORY_DEFAULT_CAPACITY"):
        InventorySettings()


@pytest.mark.parametrize("value", ["-5", "lots"])
def test_python_m_inventory_with_a_wrong_default_capacity_exits_naming_it(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "INVENTORY_NATS_URL": "nats://127.0.0.1:1",
        "INVENTORY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
        "INVENTORY_HEALTH_PORT": "0",
        "INVENTORY_DEFAULT_CAPACITY": value,
    }
    done = subprocess.run(
        [sys.executable, "-m", "inventory"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "invalid configuration for InventorySettings" in done.stderr
    assert "INVENTORY_DEFAULT_CAPACITY" in done.stderr
    assert not (tmp_path / "i.db").exists()  # stopped before touching anything
