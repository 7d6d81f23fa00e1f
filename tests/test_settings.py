"""ServiceSettings read credentials from files in CHOREO_SECRETS_DIR (a mounted Secret volume)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic_settings import SettingsError

from booking.settings import BookingSettings
from choreo.settings import SECRETS_DIR_ENV, ServiceSettings
from gateway.settings import GatewaySettings
from payment.settings import PaymentSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the test process's own environment leaks into these tests."""
    for prefix in ("BOOKING_", "PAYMENT_", "GATEWAY_", "CHOREO_"):
        for name in [n for n in os.environ if n.startswith(prefix)]:
            monkeypatch.delenv(name)


def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_text(content)
    monkeypatch.setenv(SECRETS_DIR_ENV, str(directory))
    return directory


@pytest.mark.parametrize(
    ("settings_cls", "prefix"),
    [(BookingSettings, "BOOKING_"), (PaymentSettings, "PAYMENT_"), (GatewaySettings, "GATEWAY_")],
)
def test_each_service_reads_its_prefixed_files(
    settings_cls: type[ServiceSettings], prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+asyncpg://{prefix.lower()}:pw@db:5432/x"
    secrets_dir(
        tmp_path,
        monkeypatch,
        {f"{prefix}NATS_PASSWORD": "s3cret\n", f"{prefix}DATABASE_URL": url + "\n", "OTHER_NATS_USER": "no"},
    )
    settings = settings_cls()
    assert settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "s3cret"
    assert settings.database_url == url
    # A file of another prefix is not read.
    assert settings.nats_user is None


def test_payment_specific_setting_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+asyncpg://payment:pw@db:5432/payment_ledger"
    secrets_dir(tmp_path, monkeypatch, {"PAYMENT_PROVIDER_LEDGER_URL": url + "\n"})
    assert PaymentSettings().provider_ledger_url == url


def test_only_the_trailing_newline_is_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir(tmp_path, monkeypatch, {"BOOKING_NATS_PASSWORD": "a b\n"})
    password = BookingSettings().nats_password
    assert password is not None and password.get_secret_value() == "a b"


def test_environment_wins_over_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir(tmp_path, monkeypatch, {"BOOKING_NATS_PASSWORD": "from-file", "BOOKING_NATS_USER": "file"})
    monkeypatch.setenv("BOOKING_NATS_PASSWORD", "from-env")
    settings = BookingSettings()
    assert settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "from-env"
    assert settings.nats_user == "file"


def test_file_values_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir(tmp_path, monkeypatch, {"BOOKING_NATS_URL": "http://nope\n"})
    with pytest.raises(ValueError, match="not a NATS URL"):
        BookingSettings()


def test_without_the_variable_no_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir(tmp_path, monkeypatch, {"BOOKING_NATS_PASSWORD": "from-file"})
    monkeypatch.delenv(SECRETS_DIR_ENV)
    assert BookingSettings().nats_password is None


def test_a_missing_directory_stops_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "not-mounted"
    monkeypatch.setenv(SECRETS_DIR_ENV, str(missing))
    with pytest.raises(SettingsError, match=f"{SECRETS_DIR_ENV}=.*not-mounted.*is not a directory"):
        BookingSettings()


def test_a_file_instead_of_a_directory_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv(SECRETS_DIR_ENV, str(not_a_dir))
    with pytest.raises(SettingsError, match="is not a directory"):
        GatewaySettings()


def test_kubernetes_projected_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet writes the files into a timestamped directory and links each name through
    ``..data``; the links stay inside the mount, so they are followed."""
    directory = secrets_dir(tmp_path, monkeypatch, {})
    version = directory / "..2026_11_26_04_00_00.000000001"
    version.mkdir()
    (version / "GATEWAY_NATS_PASSWORD").write_text("linked\n")
    (directory / "..data").symlink_to(version.name)
    (directory / "GATEWAY_NATS_PASSWORD").symlink_to("..data/GATEWAY_NATS_PASSWORD")
    password = GatewaySettings().nats_password
    assert password is not None and password.get_secret_value() == "linked"
