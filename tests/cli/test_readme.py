"""The README documents what exists: its commands, the settings, the subjects and ``choreo up``'s options."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from analytics.settings import AnalyticsSettings
from booking.settings import BookingSettings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.contract import fact_stream, fact_subject
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.settings import ConsumerSettings, ServiceSettings
from choreoctl.stack import local_stack
from gateway.settings import GatewaySettings
from inventory.settings import InventorySettings
from notification.settings import NotificationSettings
from payment.settings import PaymentSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CI_RUN = (ROOT / ".ci" / "run").read_text()
SERVICES: dict[str, type[ServiceSettings]] = {
    "BOOKING_": BookingSettings,
    "PAYMENT_": PaymentSettings,
    "GATEWAY_": GatewaySettings,
    "NOTIFICATION_": NotificationSettings,
    "ANALYTICS_": AnalyticsSettings,
    "INVENTORY_": InventorySettings,
}


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_run_and_the_test_commands() -> None:
    first, second = code_blocks(README)[:2]
    assert first == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/choreo up --demo"
    assert second == "./.ci/run"


def test_ci_run_runs_the_documented_checks_and_tests() -> None:
    assert CI_RUN.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in CI_RUN
    for command in ("ruff format --check .", "ruff check .", "mypy", 'python -m pytest "$@"'):
        assert re.search(rf"^{re.escape(command)}", CI_RUN, re.M), command
    assert '"$status" -eq 5' in CI_RUN, "pytest finding no tests must fail CI"
    assert "python -m pytest" in section("Development")


#: The paragraph that opens the table of the event consumers' settings (unprefixed rows there
#: are ``ConsumerSettings``; before it, ``ServiceSettings``).
CONSUMERS_TABLE = "\nBooking, payment, notification and analytics (event consumers"


def documented_settings() -> dict[type[ServiceSettings], set[str]]:
    classes: list[type[ServiceSettings]] = [ServiceSettings, ConsumerSettings, *SERVICES.values()]
    documented: dict[type[ServiceSettings], set[str]] = {cls: set() for cls in classes}
    text = section("Configuration")
    consumers_at = text.index(CONSUMERS_TABLE)
    for row in re.finditer(r"^\| ((?:`[A-Z0-9_]+`(?:, )?)+) \|", text, re.M):
        for name in re.findall(r"`([A-Z0-9_]+)`", row.group(1)):
            prefix = next((p for p in SERVICES if name.startswith(p)), None)
            common = ServiceSettings if row.start() < consumers_at else ConsumerSettings
            cls = SERVICES[prefix] if prefix else common
            field = name.removeprefix(prefix or "").lower()
            assert field in cls.model_fields, f"README documents {name}, which {cls.__name__} does not have"
            documented[cls].add(field)
    return documented


def test_every_documented_setting_exists_and_every_setting_is_documented() -> None:
    documented = documented_settings()
    common = set(ServiceSettings.model_fields) - {"service_name"}
    assert common == documented[ServiceSettings], "the common settings"
    consumers = set(ConsumerSettings.model_fields) - set(ServiceSettings.model_fields)
    assert consumers == documented[ConsumerSettings], "the event consumers' settings"
    for cls in SERVICES.values():
        base = ConsumerSettings if issubclass(cls, ConsumerSettings) else ServiceSettings
        own = set(cls.model_fields) - set(base.model_fields)
        assert own == documented[cls], cls.__name__


def test_subject_table_matches_the_code() -> None:
    table = section("How it works")
    for message in (
        booking_events.BookingCreated(),
        booking_events.BookingConfirmed(),
        booking_events.BookingCancelled(),
        payment_events.PaymentSucceeded(),
        payment_events.PaymentFailed(),
        payment_events.PaymentRefunded(),
        inventory_events.InventoryReserved(),
        inventory_events.InventoryReservationFailed(),
        inventory_events.InventoryReleased(),
        inventory_events.InventoryCapacitySet(),
        notification_events.NotificationSent(),
    ):
        subject = fact_subject(type(message))
        stream = fact_stream(type(message))
        row = f"| {stream} | `{subject}`"
        assert re.search(rf"^{re.escape(row)}\s+\| `{message.DESCRIPTOR.full_name}`", table, re.M), row


def test_up_usage_lists_every_option() -> None:
    parser = argparse.ArgumentParser()
    local_stack.SUBCOMMAND.add_arguments(parser)
    options = {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    usage = code_blocks(section("Running it: `choreo up`"))[0]
    assert set(re.findall(r"--[a-z-]+", usage)) == options - {"--help", "--verbose"}
    assert "[-v]" in usage
