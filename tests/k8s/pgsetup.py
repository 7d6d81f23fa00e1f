"""The first-start database script, run against the test PostgreSQL under a unique prefix."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import PG_URL
from tests.k8s import tools
from tests.k8s.manifests import K8S

SCRIPT = K8S / "base" / "postgres" / "init-databases.sh"
#: service -> the databases its role owns (the payment simulator keeps its own ledger). The
#: gateway has none: its read model is SQLite on each of its pods' own volume.
DATABASES = {
    "booking": ["booking"],
    "payment": ["payment", "payment_ledger"],
    "inventory": ["inventory"],
    "notification": ["notification"],
    "analytics": ["analytics"],
}


def psql() -> str:
    path = shutil.which("psql")
    if path is None:
        tools.missing("psql (PostgreSQL client)", "apt-get install postgresql-client")
    return str(path)


@dataclass
class ServiceDatabases:
    """The script's roles and databases on the test server, names prefixed."""

    env: dict[str, str]
    prefix: str

    def run_script(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT)], env=self.env, capture_output=True, text=True, check=False
        )

    def sql(self, user: str, database: str, query: str) -> subprocess.CompletedProcess[str]:
        command = [psql(), "-U", user, "-d", database, "-Atc", query]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)

    def local_url(self, url: str) -> str:
        """A URL of the dev Secrets (role@postgres:5432/db), pointed at the prefixed role and
        database on the test server; driver, password and query are kept."""
        parts = urlsplit(url)
        netloc = f"{self.prefix}{parts.username}:{parts.password}@{self.env['PGHOST']}:{self.env['PGPORT']}"
        return urlunsplit((parts.scheme, netloc, f"/{self.prefix}{parts.path.lstrip('/')}", parts.query, ""))


@contextmanager
def service_databases() -> Iterator[ServiceDatabases]:
    """Environment for the script against the test PostgreSQL; drops everything afterwards."""
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
    dbs = ServiceDatabases(env, prefix)
    probe = dbs.sql(env["POSTGRES_USER"], "postgres", "select 1")
    if probe.returncode != 0:
        tools.missing(f"PostgreSQL at {PG_URL}", probe.stderr[-300:])
    try:
        yield dbs
    finally:
        drops = [
            f'DROP DATABASE IF EXISTS "{prefix}{db}" WITH (FORCE)'
            for names in DATABASES.values()
            for db in names
        ]
        drops += [f'DROP ROLE IF EXISTS "{prefix}{role}"' for role in DATABASES]
        # One -c per statement: DROP DATABASE cannot run inside the transaction of a multi-statement -c.
        commands = [arg for sql in drops for arg in ("-c", sql)]
        subprocess.run([psql(), "-d", "postgres", *commands], env=env, capture_output=True, check=False)
