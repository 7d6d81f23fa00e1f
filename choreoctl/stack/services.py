"""What ``choreo up`` runs: the services, their ports, environments, endpoints and command lines.

Each service is ``python -m <service>`` with this interpreter, configured only
through its environment variables, as a deployment configures it. What
``choreo up`` decides (NATS URL and credentials, ports, the SMTP sink) overrides
the inherited environment; the rest are defaults that an exported variable
replaces (databases in the data directory, loopback listen addresses, JSON logs,
the gateway's streams).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from choreo.sealing import load_or_create_keypair
from choreoctl.stack.mailroute import MailRoute
from choreoctl.stack.supervisor import ProcessSpec

LOCALHOST = "127.0.0.1"

#: The services, in start order (they do not depend on each other to start).
SERVICES = ("booking", "payment", "notification", "analytics", "inventory", "gateway")
#: The conventional port of each service's own health endpoint (the gateway's is its HTTP port).
HEALTH_PORTS: Mapping[str, int] = {
    "booking": 8081,
    "payment": 8082,
    "notification": 8083,
    "analytics": 8084,
    "inventory": 8085,
}
#: The stream each service owns; the gateway projects those of the services that run.
OWNED_STREAMS: Mapping[str, str] = {
    "booking": "BOOKING",
    "payment": "PAYMENT",
    "notification": "NOTIFICATION",
    "inventory": "INVENTORY",
}


@dataclass(frozen=True)
class Ports:
    """The local ports of the services.

    Attributes:
        grpc: The gateway's gRPC port.
        http: The gateway's HTTP port (its health endpoints too).
        health: The health port of each other service.
    """

    grpc: int
    http: int
    health: Mapping[str, int]


@dataclass(frozen=True)
class Endpoints:
    """Where the running system answers.

    Attributes:
        nats_url: The NATS server the services use.
        grpc_target: ``host:port`` of the gateway's gRPC API.
        http_base: Base URL of the gateway's HTTP API.
        health: Readiness URL of each service.
        data_dir: Databases, JetStream store and logs.
        logs: Log file of each service (and of nats-server, when started here).
        operator_url: NATS URL with the operator's credentials (when nats-server is ours).
        gateway_auth: The gateway's ``GATEWAY_AUTH``.
        tokens: Bearer tokens for the gateway by what they are for (``user``, ``admin``),
            when it verifies them.
        mail: Where the notification service's emails go (when it runs).
        inventory_env: The inventory service's environment, for its operator CLI
            (``python -m inventory capacity ...``: the demo's sold-out resource), when it runs.
    """

    nats_url: str
    grpc_target: str
    http_base: str
    health: Mapping[str, str]
    data_dir: Path
    logs: Mapping[str, Path]
    operator_url: str | None = None
    gateway_auth: str = "none"
    tokens: Mapping[str, str] = field(default_factory=dict)
    mail: MailRoute | None = None
    inventory_env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def bearer_token(self) -> str | None:
        """The user token, for clients of the gateway (the demo)."""
        return self.tokens.get("user")

    @property
    def admin_token(self) -> str | None:
        """The admin token (scope ``bookings:admin``: the stats), when the gateway verifies tokens."""
        return self.tokens.get("admin")


def service_environments(
    base: Mapping[str, str],
    nats_url: str,
    ports: Ports,
    data_dir: Path,
    payment_latency_ms: int | None,
    *,
    settings: Mapping[str, Mapping[str, str]] | None = None,
    mail: MailRoute | None = None,
    services: Sequence[str] = SERVICES,
) -> dict[str, dict[str, str]]:
    """The environment of each service process.

    What ``choreo up`` decides (NATS URL, ports, latency when given,
    ``settings``: by service, settings without its prefix, such as its NATS
    credentials, and the notification service's SMTP server when ``mail`` is the
    sink) overrides the inherited environment; the rest are defaults that an
    exported variable replaces, e.g. ``BOOKING_DATABASE_URL=postgresql+asyncpg://...``
    to run the booking service on PostgreSQL.
    """
    if mail is not None:
        # Settings for an SMTP server that is not used (the sink's route drops them).
        base = {key: value for key, value in base.items() if key not in mail.dropped}
    defaults: dict[str, dict[str, str]] = {
        name: {
            "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        for name in services
    }
    forced: dict[str, dict[str, str]] = {name: {"NATS_URL": nats_url} for name in services}
    # The services' own health endpoints; the gateway answers probes on its HTTP port.
    for name in services:
        if name in HEALTH_PORTS:
            defaults[name]["HEALTH_HOST"] = LOCALHOST
            forced[name]["HEALTH_PORT"] = str(ports.health[name])
    if "gateway" in defaults:
        # Locally the gateway listens on loopback only; export GATEWAY_HOST=0.0.0.0 to expose it.
        defaults["gateway"]["HOST"] = LOCALHOST
        # Anyone reaching the gateway may act as any user, unless `choreo up --auth`.
        defaults["gateway"]["AUTH"] = "none"
        # The traces show every service's facts (the emails too).
        defaults["gateway"]["STREAMS"] = ",".join(OWNED_STREAMS[s] for s in services if s in OWNED_STREAMS)
        forced["gateway"].update(GRPC_PORT=str(ports.grpc), HTTP_PORT=str(ports.http))
    if "payment" in defaults:
        defaults["payment"]["PROVIDER_LEDGER_URL"] = f"sqlite+aiosqlite:///{data_dir / 'psp-ledger.db'}"
        # Payment tokens are sealed to payment's key (choreo.sealing): one pair per data directory.
        private_key, public_key = load_or_create_keypair(data_dir / "payment-token.key")
        defaults["payment"]["TOKEN_PRIVATE_KEY"] = private_key
        if "booking" in defaults:
            defaults["booking"]["PAYMENT_TOKEN_PUBLIC_KEY"] = public_key
        if payment_latency_ms is not None:
            forced["payment"]["PROVIDER_LATENCY_MS"] = str(payment_latency_ms)
    for name, values in (settings or {}).items():
        if name in forced:
            forced[name].update(values)
    if mail is not None and "notification" in forced:
        forced["notification"].update(mail.settings)
    envs = {}
    for name in services:
        prefix = f"{name.upper()}_"
        env = dict(base)
        for key, value in defaults[name].items():
            env.setdefault(prefix + key, value)
        env.update({prefix + key: value for key, value in forced[name].items()})
        # Log lines reach the file as they are written, not when a buffer fills.
        env["PYTHONUNBUFFERED"] = "1"
        envs[name] = env
    return envs


def endpoints_for(
    nats_url: str, ports: Ports, data_dir: Path, nats_log: Path | None, services: Sequence[str] = SERVICES
) -> Endpoints:
    logs = {name: data_dir / "logs" / f"{name}.log" for name in services}
    if nats_log is not None:
        logs["nats"] = nats_log
    health = {
        name: f"http://{LOCALHOST}:{ports.http if name == 'gateway' else ports.health[name]}/readyz"
        for name in services
    }
    return Endpoints(
        nats_url=nats_url,
        grpc_target=f"{LOCALHOST}:{ports.grpc}",
        http_base=f"http://{LOCALHOST}:{ports.http}",
        health=health,
        data_dir=data_dir,
        logs=logs,
    )


def process_specs(endpoints: Endpoints, envs: Mapping[str, Mapping[str, str]]) -> list[ProcessSpec]:
    """How to run each service of ``endpoints``, in its order."""
    return [
        ProcessSpec(
            name=name,
            argv=[sys.executable, "-m", name],
            env=envs[name],
            log_file=endpoints.logs[name],
            ready_url=endpoints.health[name],
        )
        for name in endpoints.health
    ]
