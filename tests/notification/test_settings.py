"""NotificationSettings: what it refuses, naming the variable, and never echoing a password."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from notification.build import build
from notification.settings import NotificationSettings, is_loopback

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-do-not-print"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("NOTIFICATION_"):
            monkeypatch.delenv(name)
    yield


def test_defaults_follow_the_design() -> None:
    s = NotificationSettings()
    assert (s.service_name, s.health_port, s.database_url) == (
        "notification",
        8083,
        "sqlite+aiosqlite:///./var/notification.db",
    )
    assert (s.smtp_host, s.smtp_port, s.smtp_security, s.max_fact_age_seconds) == (
        None,
        587,
        "starttls",
        86400,
    )


async def test_build_refuses_to_start_without_the_smtp_host_naming_it() -> None:
    with pytest.raises(SettingsError, match="NOTIFICATION_SMTP_HOST"):
        await build(NotificationSettings(nats_url="nats://127.0.0.1:1"))  # fails before touching NATS


def test_python_m_notification_without_the_smtp_host_exits_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATION_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "NOTIFICATION_NATS_URL": "nats://127.0.0.1:1",
        "NOTIFICATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
        "NOTIFICATION_HEALTH_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "notification"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "NOTIFICATION_SMTP_HOST" in done.stderr


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "mail.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.1", "", "localhost.example.com"])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_a_password_in_clear_text_to_a_remote_server_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "bookings@example.com")
    monkeypatch.setenv("NOTIFICATION_SMTP_SECURITY", "none")
    monkeypatch.setenv("NOTIFICATION_SMTP_USERNAME", "app")
    monkeypatch.setenv("NOTIFICATION_SMTP_PASSWORD", SECRET)
    with pytest.raises(ValidationError) as refused:
        NotificationSettings()
    assert refused.value.errors()[0]["loc"] == ("smtp_password",)
    assert "NOTIFICATION_SMTP_SECURITY=none" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_a_password_in_clear_text_on_loopback_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NOTIFICATION_SMTP_SECURITY", "NONE")
    monkeypatch.setenv("NOTIFICATION_SMTP_USERNAME", "app")
    monkeypatch.setenv("NOTIFICATION_SMTP_PASSWORD", SECRET)
    smtp = NotificationSettings().smtp()
    assert smtp.security == "none"
    assert smtp.password is not None and smtp.password.get_secret_value() == SECRET
    assert SECRET not in repr(smtp) and SECRET not in repr(NotificationSettings())


def test_an_unknown_security_mode_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_SECURITY", "ssl")
    with pytest.raises(ValidationError) as refused:
        NotificationSettings()
    assert refused.value.errors()[0]["loc"] == ("smtp_security",)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NOTIFICATION_SMTP_USERNAME": "app"}, "NOTIFICATION_SMTP_PASSWORD"),
        ({"NOTIFICATION_SMTP_PASSWORD": SECRET}, "NOTIFICATION_SMTP_USERNAME"),
        ({"NOTIFICATION_MAIL_FROM": "not an address"}, "mail_from"),
        ({"NOTIFICATION_MESSAGE_ID_DOMAIN": "bad domain!"}, "message_id_domain"),
        ({"NOTIFICATION_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "smtp_ca_file"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        NotificationSettings()
    assert named in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_password_may_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(SECRET + "\n")
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "bookings@example.com")
    monkeypatch.setenv("NOTIFICATION_SMTP_USERNAME", "app")
    monkeypatch.setenv("NOTIFICATION_SMTP_PASSWORD_FILE", str(secret))
    smtp = NotificationSettings().smtp()
    assert smtp.password is not None and smtp.password.get_secret_value() == SECRET
    monkeypatch.setenv("NOTIFICATION_SMTP_PASSWORD", SECRET)
    with pytest.raises(ValidationError, match="not both"):
        NotificationSettings()


def test_the_message_id_domain_defaults_to_the_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "Bookings <no-reply@bookings.example.com>")
    s = NotificationSettings()
    assert (s.mail_from_address, s.message_domain) == (
        "no-reply@bookings.example.com",
        "bookings.example.com",
    )


def test_a_typo_in_a_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_HOTS", "smtp.example.com")
    with pytest.raises(SettingsError, match="NOTIFICATION_SMTP_HOTS"):
        NotificationSettings()


@pytest.mark.parametrize(("age", "retry"), [("3600", "3600"), ("3600", "7200"), ("3600", "0")])
def test_the_retry_window_must_end_before_the_age_limit(
    age: str, retry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "bookings@example.com")
    monkeypatch.setenv("NOTIFICATION_MAX_FACT_AGE_SECONDS", age)
    monkeypatch.setenv("NOTIFICATION_SMTP_RETRY_SECONDS", retry)
    with pytest.raises(ValidationError, match="NOTIFICATION_SMTP_RETRY_SECONDS"):
        NotificationSettings()


def test_a_sender_at_localhost_is_refused_for_a_remote_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "smtp.example.com")
    with pytest.raises(ValidationError, match="NOTIFICATION_MAIL_FROM"):
        NotificationSettings()
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "Bookings <bookings@example.com>")
    assert NotificationSettings().message_domain == "example.com"
    monkeypatch.setenv("NOTIFICATION_SMTP_HOST", "127.0.0.1")  # a local relay may take it
    monkeypatch.setenv("NOTIFICATION_MAIL_FROM", "no-reply@localhost")
    assert NotificationSettings().smtp_host == "127.0.0.1"
