"""PostgreSQL: the Secrets, the first-start script and the services' database URLs agree,
and the script really gives each service a database only it can open."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import PG_URL
from tests.k8s import tools
from tests.k8s.docs import prod_secret_keys
from tests.k8s.manifests import K8S, Manifests, SecretRef, only_container

SCRIPT = K8S / "base" / "postgres" / "init-databases.sh"
#: service -> the databases its role owns (the payment simulator keeps its own ledger).
DATABASES = {"booking": ["booking"], "payment": ["payment", "payment_ledger"], "gateway": ["gateway"]}
URL_KEYS = {"url": 0, "ledger-url": 1}


def script_owners() -> dict[str, list[str]]:
    """role -> databases, from the script's `create_owner ROLE "$PASSWORD" DB...` lines."""
    found = {}
    for line in SCRIPT.read_text().splitlines():
        match = re.fullmatch(r'create_owner (\w+) "\$(\w+)"((?: \w+)+)', line.strip())
        if match:
            found[match.group(1)] = match.group(3).split()
    return found


def test_script_creates_a_database_per_service() -> None:
    assert script_owners() == DATABASES


def test_dev_secrets_match_the_script_and_the_services(overlays: dict[str, Manifests]) -> None:
    dev = overlays["dev"]
    postgres_env = dev.container_env(only_container(dev.get("StatefulSet", "postgres")))
    for service, databases in DATABASES.items():
        password_ref = postgres_env[f"{service.upper()}_DB_PASSWORD"]
        assert isinstance(password_ref, SecretRef) and password_ref.key == "password"
        password = dev.secret_value(password_ref)
        for key, index in URL_KEYS.items():
            if index >= len(databases):
                continue
            url = dev.secret_value(SecretRef(password_ref.name, key))
            assert url is not None, f"{password_ref.name} has no {key}"
            parts = urlsplit(url)
            assert parts.scheme == "postgresql+asyncpg"
            assert (parts.username, parts.password) == (service, password), (
                "the role and password the script sets"
            )
            assert (parts.hostname, parts.port) == ("postgres", 5432), "the postgres Service"
            assert parts.path == f"/{databases[index]}"


def test_prod_secrets_documented_with_the_keys_the_manifests_read(overlays: dict[str, Manifests]) -> None:
    prod = overlays["prod"]
    used: dict[str, set[str]] = {}
    for workload in prod.workloads():
        for value in prod.container_env(only_container(workload)).values():
            if isinstance(value, SecretRef):
                used.setdefault(value.name, set()).add(value.key)
    assert prod_secret_keys() == used


def _psql() -> str:
    path = shutil.which("psql")
    if path is None:
        tools.missing("psql (PostgreSQL client)", "apt-get install postgresql-client")
    return str(path)


@pytest.fixture
def pg_env() -> Iterator[tuple[dict[str, str], str]]:
    """Environment for the script against the test PostgreSQL, with a unique name prefix; cleans up."""
    url = urlsplit(PG_URL)
    prefix = f"k8s{uuid.uuid4().hex[:8]}_"
    env = {
        **os.environ,
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "CHOREO_DB_PREFIX": prefix,
        **{f"{s.upper()}_DB_PASSWORD": f"pw-{s}'quoted" for s in DATABASES},
    }
    psql = _psql()
    probe = subprocess.run(
        [psql, "-d", "postgres", "-Atc", "select 1"], env=env, capture_output=True, check=False
    )
    if probe.returncode != 0:
        tools.missing(f"PostgreSQL at {PG_URL}", probe.stderr.decode()[-300:])
    yield env, prefix
    drops = [
        f'DROP DATABASE IF EXISTS "{prefix}{db}" WITH (FORCE);' for dbs in DATABASES.values() for db in dbs
    ]
    drops += [f'DROP ROLE IF EXISTS "{prefix}{role}";' for role in DATABASES]
    # One -c per statement: DROP DATABASE cannot run inside the transaction of a multi-statement -c.
    commands = [arg for sql in drops for arg in ("-c", sql)]
    subprocess.run([psql, "-d", "postgres", *commands], env=env, capture_output=True, check=False)


def _sql(env: dict[str, str], user: str, database: str, query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_psql(), "-U", user, "-d", database, "-Atc", query],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_script_gives_each_service_its_own_database(pg_env: tuple[dict[str, str], str]) -> None:
    env, prefix = pg_env
    for _ in range(2):  # idempotent: a second run changes nothing and does not fail
        result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    admin = env["POSTGRES_USER"]
    for service, databases in DATABASES.items():
        for database in databases:
            owner = _sql(
                env,
                admin,
                "postgres",
                f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{prefix}{database}'",
            )
            assert owner.stdout.strip() == f"{prefix}{service}"
            own = _sql(env, f"{prefix}{service}", f"{prefix}{database}", "SELECT current_user")
            assert own.returncode == 0, own.stderr
        for other, other_dbs in DATABASES.items():
            if other == service:
                continue
            denied = _sql(env, f"{prefix}{service}", f"{prefix}{other_dbs[0]}", "SELECT 1")
            assert denied.returncode != 0 and "permission denied" in denied.stderr, (
                service,
                other,
                denied.stderr,
            )
