"""PostgreSQL: the Secrets, the first-start script and the services' database URLs agree,
and the script really gives each service a database only it can open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.k8s.docs import prod_secret_keys
from tests.k8s.manifests import Manifests, SecretRef, only_container
from tests.k8s.pgsetup import DATABASES, SCRIPT, ServiceDatabases, service_databases

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
        for value in prod.settings_env(workload).values():
            if isinstance(value, SecretRef):
                used.setdefault(value.name, set()).add(value.key)
    assert prod_secret_keys() == used


@pytest.fixture
def databases() -> Iterator[ServiceDatabases]:
    with service_databases() as dbs:
        yield dbs


def test_script_gives_each_service_its_own_database(databases: ServiceDatabases) -> None:
    prefix, admin = databases.prefix, databases.env["POSTGRES_USER"]
    for _ in range(2):  # idempotent: a second run changes nothing and does not fail
        result = databases.run_script()
        assert result.returncode == 0, result.stderr
    for service, names in DATABASES.items():
        for database in names:
            query = f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{prefix}{database}'"
            assert databases.sql(admin, "postgres", query).stdout.strip() == f"{prefix}{service}"
            own = databases.sql(f"{prefix}{service}", f"{prefix}{database}", "SELECT current_user")
            assert own.returncode == 0, own.stderr
        for other, other_names in DATABASES.items():
            if other != service:
                denied = databases.sql(f"{prefix}{service}", f"{prefix}{other_names[0]}", "SELECT 1")
                assert denied.returncode != 0 and "permission denied" in denied.stderr, (service, other)
