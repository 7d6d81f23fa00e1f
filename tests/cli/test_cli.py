"""The ``choreo`` command line and how ``choreo up`` configures the services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from choreoctl.cli import build_parser, load_subcommands, main
from choreoctl.stack import services
from choreoctl.stack.services import Ports, endpoints_for, process_specs, service_environments

PORTS = Ports(
    grpc=50051,
    http=8080,
    health={"booking": 8081, "payment": 8082, "notification": 8083, "analytics": 8084, "inventory": 8085},
)


def test_up_options_parse() -> None:
    parser = build_parser(load_subcommands())
    args = parser.parse_args(
        [
            "up",
            "--demo",
            "--nats-url",
            "nats://h:4222",
            "--data-dir",
            "/d",
            "--grpc-port",
            "0",
            "--http-port",
            "1",
            "--notification-health-port",
            "2",
            "--analytics-health-port",
            "3",
            "--inventory-health-port",
            "4",
        ]
    )
    assert (args.demo, args.nats_url, args.data_dir, args.grpc_port, args.http_port) == (
        True,
        "nats://h:4222",
        "/d",
        0,
        1,
    )
    assert (
        args.notification_health_port,
        args.analytics_health_port,
        args.inventory_health_port,
        args.booking_health_port,
    ) == (2, 3, 4, None)
    args = parser.parse_args(["up"])
    assert (args.demo, args.nats_url, args.data_dir, args.grpc_port, args.payment_latency_ms) == (
        False,
        None,
        "./var",
        None,
        None,
    )


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_console_script_lists_up() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "choreoctl", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "up" in out and "run nats-server and every service" in out


def test_environment_forces_what_up_decides_and_defaults_the_rest(tmp_path: Path) -> None:
    base = {
        "PATH": "/bin",
        "BOOKING_DATABASE_URL": "postgresql+asyncpg://db/booking",
        "BOOKING_NATS_URL": "nats://elsewhere:4222",
        "GATEWAY_GRPC_PORT": "1",
        "PAYMENT_PROVIDER_LATENCY_MS": "900",
    }
    envs = service_environments(base, "nats://127.0.0.1:4333", PORTS, tmp_path, None)
    booking, payment, gateway = envs["booking"], envs["payment"], envs["gateway"]
    assert booking["BOOKING_DATABASE_URL"] == "postgresql+asyncpg://db/booking", "an exported URL wins"
    assert booking["BOOKING_NATS_URL"] == "nats://127.0.0.1:4333", "up's NATS wins"
    assert booking["BOOKING_HEALTH_PORT"] == "8081"
    assert payment["PAYMENT_HEALTH_PORT"] == "8082"
    assert payment["PAYMENT_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'payment.db'}"
    assert payment["PAYMENT_PROVIDER_LEDGER_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'psp-ledger.db'}"
    assert payment["PAYMENT_PROVIDER_LATENCY_MS"] == "900", "kept without --payment-latency-ms"
    assert (gateway["GATEWAY_GRPC_PORT"], gateway["GATEWAY_HTTP_PORT"]) == ("50051", "8080")
    assert gateway["GATEWAY_HOST"] == "127.0.0.1"
    assert gateway["GATEWAY_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    assert all(env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1" for env in envs.values())
    latency = service_environments(base, "nats://x:1", PORTS, tmp_path, 2000)["payment"]
    assert latency["PAYMENT_PROVIDER_LATENCY_MS"] == "2000"


def test_services_run_as_modules_of_this_interpreter(tmp_path: Path) -> None:
    endpoints = endpoints_for("nats://127.0.0.1:4222", PORTS, tmp_path, tmp_path / "nats" / "nats-server.log")
    envs = service_environments({}, endpoints.nats_url, PORTS, tmp_path, None)
    specs = {spec.name: spec for spec in process_specs(endpoints, envs)}
    assert list(specs) == list(services.SERVICES)
    assert specs["booking"].argv == [sys.executable, "-m", "booking"]
    assert specs["gateway"].ready_url == "http://127.0.0.1:8080/readyz"
    assert specs["payment"].ready_url == "http://127.0.0.1:8082/readyz"
    assert specs["booking"].log_file == tmp_path / "logs" / "booking.log"
    assert endpoints.logs["nats"] == tmp_path / "nats" / "nats-server.log"
    assert specs["notification"].argv == [sys.executable, "-m", "notification"]
    assert specs["notification"].ready_url == "http://127.0.0.1:8083/readyz"
    assert specs["analytics"].ready_url == "http://127.0.0.1:8084/readyz"
    assert specs["analytics"].log_file == tmp_path / "logs" / "analytics.log"


def test_notification_and_analytics_are_configured_like_a_deployment(tmp_path: Path) -> None:
    base = {"ANALYTICS_DATABASE_URL": "postgresql+asyncpg://db/analytics", "NOTIFICATION_HEALTH_PORT": "1"}
    envs = service_environments(base, "nats://127.0.0.1:4333", PORTS, tmp_path, None)
    notification, analytics = envs["notification"], envs["analytics"]
    assert notification["NOTIFICATION_NATS_URL"] == analytics["ANALYTICS_NATS_URL"] == "nats://127.0.0.1:4333"
    assert notification["NOTIFICATION_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'notification.db'}"
    assert analytics["ANALYTICS_DATABASE_URL"] == "postgresql+asyncpg://db/analytics", "an exported URL wins"
    assert (notification["NOTIFICATION_HEALTH_PORT"], analytics["ANALYTICS_HEALTH_PORT"]) == ("8083", "8084")
    assert notification["NOTIFICATION_HEALTH_HOST"] == analytics["ANALYTICS_HEALTH_HOST"] == "127.0.0.1"
    assert notification["NOTIFICATION_LOG_FORMAT"] == "json"
    assert envs["gateway"]["GATEWAY_STREAMS"] == "BOOKING,PAYMENT,NOTIFICATION,INVENTORY"
    exported = service_environments({"GATEWAY_STREAMS": "BOOKING"}, "nats://x:1", PORTS, tmp_path, None)
    assert exported["gateway"]["GATEWAY_STREAMS"] == "BOOKING", "an exported list wins"


def test_inventory_is_configured_like_a_deployment(tmp_path: Path) -> None:
    """Its own database in the data directory, its health port, the NATS of up; its stream is projected."""
    base = {"INVENTORY_DEFAULT_CAPACITY": "7", "INVENTORY_HEALTH_PORT": "1"}
    envs = service_environments(base, "nats://127.0.0.1:4333", PORTS, tmp_path, None)
    inventory = envs["inventory"]
    assert inventory["INVENTORY_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"
    assert (inventory["INVENTORY_HEALTH_HOST"], inventory["INVENTORY_HEALTH_PORT"]) == ("127.0.0.1", "8085")
    assert inventory["INVENTORY_NATS_URL"] == "nats://127.0.0.1:4333"
    assert inventory["INVENTORY_DEFAULT_CAPACITY"] == "7", "its own settings pass through"
    assert (inventory["INVENTORY_LOG_FORMAT"], inventory["PYTHONUNBUFFERED"]) == ("json", "1")
    assert services.HEALTH_PORTS["inventory"] == 8085 and services.OWNED_STREAMS["inventory"] == "INVENTORY"
    endpoints = endpoints_for("nats://x:1", PORTS, tmp_path, None)
    specs = {spec.name: spec for spec in process_specs(endpoints, envs)}
    assert specs["inventory"].argv == [sys.executable, "-m", "inventory"]
    assert specs["inventory"].ready_url == "http://127.0.0.1:8085/readyz"
    assert specs["inventory"].log_file == tmp_path / "logs" / "inventory.log"
    assert list(specs)[-1] == "gateway", "the gateway starts last"


def test_the_bench_runs_the_booking_workflow_only(tmp_path: Path) -> None:
    core = ("booking", "payment", "gateway")
    ports = Ports(grpc=1, http=2, health={"booking": 3, "payment": 4})
    envs = service_environments({}, "nats://x:1", ports, tmp_path, None, services=core)
    assert list(envs) == list(core)
    assert envs["gateway"]["GATEWAY_STREAMS"] == "BOOKING,PAYMENT"
    endpoints = endpoints_for("nats://x:1", ports, tmp_path, None, core)
    assert [spec.name for spec in process_specs(endpoints, envs)] == list(core)
