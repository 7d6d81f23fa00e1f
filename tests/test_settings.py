"""Each service's settings: only what it reads, no unknown variable of its prefix, and
credentials from files in CHOREO_SECRETS_DIR (a mounted Secret volume)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic_settings import SettingsError

from analytics.settings import AnalyticsSettings
from booking.settings import BookingSettings
from choreo.service import load_settings
from choreo.settings import (
    SECRETS_DIR_ENV,
    ConsumerSettings,
    ServiceSettings,
    UnknownVariablesError,
    unknown_variables,
)
from choreoctl.stack.mailroute import sink_route
from choreoctl.stack.services import Ports, service_environments
from gateway.settings import GatewaySettings
from inventory.settings import InventorySettings
from notification.settings import NotificationSettings
from payment.settings import PaymentSettings
from tests.support import TOKEN_KEY_ENV


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


# -- Each service has only the settings it reads; a variable of its prefix naming none stops it --

SERVICES: dict[str, type[ServiceSettings]] = {
    "booking": BookingSettings,
    "payment": PaymentSettings,
    "gateway": GatewaySettings,
    "notification": NotificationSettings,
    "analytics": AnalyticsSettings,
    "inventory": InventorySettings,
}
#: What the event consumers read and the gateway does not (it had them, ignored, before issue 10).
CONSUMER_ONLY = (
    "HEALTH_PORT",
    "HEALTH_HOST",
    "MIGRATE",
    "STREAM_MAX_BYTES",
    "STREAM_MAX_MSG_SIZE",
    "STREAM_MAX_AGE_SECONDS",
    "BATCH_SIZE",
    "MAX_DELIVERIES",
    "ACK_WAIT_SECONDS",
    "RETRY_BACKOFF_SECONDS",
    "RETRY_BACKOFF_MAX_SECONDS",
    "RUN_TIMEOUT_SECONDS",
    "INBOX_RETENTION_SECONDS",
)
#: Read by every service (a contract: deployments set them).
COMMON = (
    "NATS_URL",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_CREDS",
    "NATS_TLS_CA_FILE",
    "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE",
    "DATABASE_URL",
    "STREAM_REPLICAS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "SHUTDOWN_GRACE_SECONDS",
    "SQLITE_SYNCHRONOUS",
)
#: Every variable each service reads (the contract before this split, less the gateway's ignored ones).
CONTRACT = {
    "booking": {
        *COMMON,
        *CONSUMER_ONLY,
        *("COMMAND_BATCH_SIZE", "PAYMENT_TOKEN_PUBLIC_KEY", "PAYMENT_TIMEOUT_SECONDS"),
    },
    "payment": {*COMMON, *CONSUMER_ONLY, "PROVIDER_LATENCY_MS", "PROVIDER_LEDGER_URL", "TOKEN_PRIVATE_KEY"},
    "notification": {
        *COMMON,
        *CONSUMER_ONLY,
        *(f"SMTP_{name}" for name in ("HOST", "PORT", "SECURITY", "USERNAME", "PASSWORD", "PASSWORD_FILE")),
        *("SMTP_CA_FILE", "SMTP_TIMEOUT_SECONDS", "SMTP_RETRY_SECONDS"),
        *("MAIL_FROM", "MESSAGE_ID_DOMAIN", "MAX_FACT_AGE_SECONDS"),
    },
    "analytics": {*COMMON, *CONSUMER_ONLY, "QUERY_BATCH_SIZE"},
    "inventory": {*COMMON, *CONSUMER_ONLY, "DEFAULT_CAPACITY"},
    "gateway": {
        *COMMON,
        *(name.upper() for name in GatewaySettings.model_fields if name not in ServiceSettings.model_fields),
    },
}


def variables(cls: type[ServiceSettings]) -> set[str]:
    return {name.upper() for name in cls.model_fields} - {"SERVICE_NAME"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_a_service_reads_is_still_a_setting(service: str) -> None:
    assert variables(SERVICES[service]) == CONTRACT[service]


def test_only_the_event_consumers_have_the_consumer_settings() -> None:
    assert issubclass(BookingSettings, ConsumerSettings)
    assert issubclass(PaymentSettings, ConsumerSettings)
    assert not issubclass(GatewaySettings, ConsumerSettings)
    assert variables(ConsumerSettings) - variables(ServiceSettings) == set(CONSUMER_ONLY)


@pytest.mark.parametrize("name", CONSUMER_ONLY)
def test_the_gateway_refuses_a_consumer_setting_naming_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Accepted and ignored before: GATEWAY_MAX_DELIVERIES=5 looked like it did something.
    monkeypatch.setenv(f"GATEWAY_{name}", "5")
    with pytest.raises(UnknownVariablesError, match=f"^GATEWAY_{name}: not a setting of GatewaySettings"):
        GatewaySettings()


def test_start_up_stops_with_one_line_per_unknown_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MAX_DELIVERIES", "5")
    monkeypatch.setenv("GATEWAY_HTTP_PROT", "8080")
    with pytest.raises(SystemExit) as exited:
        load_settings(GatewaySettings)
    assert str(exited.value).splitlines() == [
        "invalid configuration for GatewaySettings:",
        "  GATEWAY_HTTP_PROT: not a setting of GatewaySettings (did you mean GATEWAY_HTTP_PORT?)",
        "  GATEWAY_MAX_DELIVERIES: not a setting of GatewaySettings; unset it",
    ]


def test_a_typo_is_refused_with_the_setting_it_resembles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_BATCHSIZE", "512")
    with pytest.raises(
        UnknownVariablesError, match=r"BOOKING_BATCHSIZE: .*did you mean BOOKING_BATCH_SIZE\?"
    ):
        BookingSettings()
    monkeypatch.setenv("payment_provider_latency", "10")  # names are read without case, and checked so
    with pytest.raises(
        UnknownVariablesError, match=r"payment_provider_latency: .*PAYMENT_PROVIDER_LATENCY_MS"
    ):
        PaymentSettings()


def test_a_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_TOKEN_PRIVATE_KEYS", "s3cret-key-material")
    with pytest.raises(UnknownVariablesError) as refused:
        PaymentSettings()
    assert "s3cret" not in str(refused.value)


def test_a_kubernetes_service_link_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT_8080_TCP_ADDR", "10.0.0.7")
    with pytest.raises(
        UnknownVariablesError, match=r"GATEWAY_PORT_8080_TCP_ADDR: .*enableServiceLinks: false"
    ):
        GatewaySettings()


def test_each_service_looks_only_at_its_own_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One environment (a test runner, a shell running ``choreo up``) may hold every service's
    variables; ``BOOKING_PAYMENT_*`` is booking's, ``PAYMENT_TOKEN_*`` payment's."""
    for name, value in TOKEN_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BOOKING_BATCH_SIZE", "7")
    monkeypatch.setenv("PAYMENT_MAX_DELIVERIES", "9")
    monkeypatch.setenv("GATEWAY_RECENT_VIEWS", "11")
    monkeypatch.setenv("CHOREO_TEST_PG_URL", "postgresql://x")  # another program's prefix
    # Files of other prefixes (or of no setting) in the secrets directory are not looked at.
    secrets_dir(tmp_path, monkeypatch, {"GATEWAY_MAX_DELIVERIES": "5", "PAYMENT_NATS_PASSWORD": "p"})
    booking, payment, gateway = BookingSettings(), PaymentSettings(), GatewaySettings()
    assert booking.payment_token_public_key == TOKEN_KEY_ENV["BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"].strip()
    assert (booking.batch_size, payment.max_deliveries, gateway.recent_views) == (7, 9, 11)
    assert payment.token_private_key is not None and booking.nats_password is None


def test_choreo_up_gives_each_service_only_variables_it_reads(tmp_path: Path) -> None:
    envs = service_environments(
        {},
        "nats://127.0.0.1:4222",
        Ports(
            50051,
            8080,
            {"booking": 8081, "payment": 8082, "notification": 8083, "analytics": 8084, "inventory": 8085},
        ),
        tmp_path,
        payment_latency_ms=5,
        settings={name: {"NATS_USER": name, "NATS_PASSWORD": "pw"} for name in SERVICES},
        mail=sink_route({}, tmp_path / "mail", "127.0.0.1", 2525),
        services=tuple(SERVICES),
    )
    everything = {key: value for env in envs.values() for key, value in env.items()}
    for name, cls in SERVICES.items():
        assert unknown_variables(cls, envs[name]) == [], name
        assert unknown_variables(cls, everything) == [], name


#: Values other than the default that agree with the other settings' (booking: the stream keeps a
#: fact longer than its payment timeout).
AGREEING: dict[str, float] = {"stream_max_age_seconds": 86400.0}


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_is_still_read_from_its_variable(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = SERVICES[service]
    prefix = f"{service.upper()}_"
    given = {}
    for name, field in cls.model_fields.items():
        if name != "service_name" and isinstance(field.default, bool | int | float | str):
            # A value of the field's type other than its default (where one is obvious), as text.
            value = field.default if isinstance(field.default, bool | str) else field.default + 1
            # Where settings must agree with each other, a value that agrees.
            value = AGREEING.get(name, value)
            monkeypatch.setenv(prefix + name.upper(), str(value))
            given[name] = value
    settings = cls()
    assert {name: getattr(settings, name) for name in given} == given
    assert len(given) >= 10


def test_booking_refuses_a_stream_that_forgets_bookings_before_they_time_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOOKING_PAYMENT_TIMEOUT_SECONDS", "300")
    monkeypatch.setenv("BOOKING_STREAM_MAX_AGE_SECONDS", "300")
    with pytest.raises(ValueError, match=r"BOOKING_STREAM_MAX_AGE_SECONDS .* must be longer than"):
        BookingSettings()
    monkeypatch.setenv("BOOKING_STREAM_MAX_AGE_SECONDS", "86400")
    assert BookingSettings().stream_max_age_seconds == 86400
