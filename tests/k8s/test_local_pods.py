"""What the manifests run is real: each Deployment's command and environment start the
service, and its probes pass, against the rendered NATS config and the first-start
database script (Secrets replaced by local equivalents, ports by free ones, emptyDirs
by local directories)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.localpod import LocalPod, sqlite_path
from tests.k8s.manifests import SERVICES, Manifests, SecretRef
from tests.k8s.pgsetup import DATABASES, ServiceDatabases, service_databases
from tests.k8s.stack import mail_sink, nats_passwords, notification_smtp, single_nats

pytestmark = pytest.mark.slow


@pytest.fixture
def databases() -> Iterator[ServiceDatabases]:
    with service_databases() as dbs:
        result = dbs.run_script()
        assert result.returncode == 0, result.stderr
        yield dbs


def test_each_deployment_starts_and_becomes_ready(
    overlays: dict[str, Manifests], databases: ServiceDatabases, tmp_path: Path
) -> None:
    dev = overlays["dev"]
    passwords = nats_passwords(dev)
    with single_nats(dev, tmp_path / "nats", passwords) as nats, mail_sink(dev, tmp_path / "mail") as sink:
        pods = []
        for service in SERVICES:
            env = dev.settings_env(dev.get("Deployment", service))
            secrets: dict[SecretRef, str] = {}
            replace = {f"{service.upper()}_NATS_URL": nats.url}
            if service == "notification":
                # The dev mail sink, as its Deployment runs it, on loopback.
                replace.update(notification_smtp(dev, sink)[0])
            for key, value in env.items():
                if not isinstance(value, SecretRef):
                    continue
                secret = dev.secret_value(value)
                assert secret is not None
                if key.endswith("_URL"):
                    # The dev Secret's own URL, pointed at the test server's prefixed role and database.
                    replace[key] = databases.local_url(secret)
                else:
                    secrets[value] = secret
            pods.append(LocalPod(dev, service, tmp_path / service, secrets=secrets, replace=replace))
        try:
            for pod in pods:
                pod.start()
                # Credentials reach the process as the files of its secret volume, not as variables.
                assert pod.secrets_dir is not None, pod.name
                assert pod.env["CHOREO_SECRETS_DIR"] == str(pod.secrets_dir)
                assert not set(pod.secret_files) & set(pod.env), pod.name
                assert {f.name for f in pod.secrets_dir.iterdir()} == set(pod.secret_files)
            for pod in pods:
                pod.wait_probe("startupProbe")
                pod.wait_probe("readinessProbe", timeout=10)
                ok, detail = pod.probe("livenessProbe")
                assert ok, f"{pod.name} liveness: {detail}"
            for service in DATABASES:
                # Each service created its tables in its own database, as its own role.
                role = databases.prefix + service
                tables = databases.sql(
                    role, role, "SELECT count(*) FROM pg_tables WHERE tableowner = current_user"
                )
                assert int(tables.stdout or 0) > 0, (service, tables.stderr)
            # The gateway's read model: the ConfigMap's SQLite file, on its emptyDir.
            gateway = pods[SERVICES.index("gateway")]
            pod_file = sqlite_path(str(dev.container_env(gateway.container)["GATEWAY_DATABASE_URL"]))
            assert pod_file is not None
            with sqlite3.connect(gateway.local_path(pod_file)) as db:
                names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"bookings", "checkpoints", "trace_events"} <= names, names
            connections = nats.monitor("/connz?auth=true")["connections"]
            users = sorted(c.get("authorized_user", "") for c in connections)
            assert users == sorted(SERVICES), "each service connected to NATS as its own user"
            # SIGTERM: each drains and exits cleanly within its terminationGracePeriodSeconds.
            for pod in reversed(pods):
                assert pod.terminate() == 0, pod.log_tail()
        finally:
            for pod in pods:
                pod.kill()


def test_prod_notification_waits_for_the_operators_relay(
    overlays: dict[str, Manifests], tmp_path: Path
) -> None:
    """The prod overlay names no SMTP relay: its notification pod refuses to start, naming the
    variable the operator must set (k8s/overlays/prod/notification-smtp.env), rather than start
    and fail every email."""
    prod = overlays["prod"]
    ca = tmp_path / "ca.crt"
    ca.write_text("not read: the service stops before it connects\n")
    pod = LocalPod(
        prod,
        "notification",
        tmp_path / "notification",
        secrets={},
        replace={
            "NOTIFICATION_NATS_URL": "nats://127.0.0.1:1",
            "NOTIFICATION_NATS_TLS_CA_FILE": str(ca),
            "NOTIFICATION_NATS_PASSWORD": "test-password",
            "NOTIFICATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notification.db'}",
            "NOTIFICATION_SMTP_USERNAME": "relay-user",
            "NOTIFICATION_SMTP_PASSWORD": "relay-password",
        },
    )
    pod.start()
    try:
        assert pod.process is not None
        assert pod.process.wait(60) != 0
    finally:
        pod.kill()
    log = pod.log_tail()
    assert "NOTIFICATION_SMTP_HOST is not set" in log, log
    assert "relay-password" not in log
