"""PostgreSQL TLS through the database URL (``?ssl=verify-full&sslrootcert=...``), for asyncpg.

The parameters are taken off the URL SQLAlchemy sees (it would hand each to asyncpg.connect as
a keyword, and asyncpg has none for the files) and given to asyncpg as its libpq-style dsn.
The test server (CHOREO_TEST_PG_URL) has no TLS: ``ssl=require`` must fail there, saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from choreo import dbready
from choreo.db import make_engine, normalize_url, postgres_tls
from tests.conftest import PG_URL
from tests.tlscerts import CertificateAuthority

ASYNCPG_URL = normalize_url(PG_URL)


def test_a_url_without_tls_parameters_is_unchanged() -> None:
    url, args = postgres_tls("postgresql+asyncpg://u:p@db:5432/app?prepared_statement_cache_size=0")
    assert args == {}
    assert url.query == {"prepared_statement_cache_size": "0"}


def test_tls_parameters_become_asyncpgs_dsn(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    url, args = postgres_tls(
        f"postgresql+asyncpg://u:p@db:5432/app?ssl=verify-full&sslrootcert={ca.cert_file}&command_timeout=5"
    )
    assert (
        url.render_as_string(hide_password=False) == "postgresql+asyncpg://u:p@db:5432/app?command_timeout=5"
    )
    assert args == {
        "dsn": f"postgresql://?sslmode=verify-full&sslrootcert={str(ca.cert_file).replace('/', '%2F')}"
    }


def test_libpq_sslmode_is_accepted() -> None:
    _, args = postgres_tls("postgresql+asyncpg://u@db/app?sslmode=require")
    assert args == {"dsn": "postgresql://?sslmode=require"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl=always", "ssl='always' in the database URL: must be one of disable, allow, prefer, require"),
        ("ssl=require&sslmode=require", "sets both ssl= and sslmode="),
        (
            "ssl=verify-ca&sslrootcert=/nonexistent/ca.crt",
            "sslrootcert='/nonexistent/ca.crt' in the database",
        ),
    ],
)
def test_bad_tls_parameters_are_refused(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_engine(f"postgresql+asyncpg://u@db/app?{query}")


async def test_the_mode_reaches_asyncpg() -> None:
    # `prefer` falls back to plain TCP on this server; before, SQLAlchemy handed asyncpg an
    # unknown keyword for sslmode (and sslrootcert) and no connection was made at all.
    engine = make_engine(f"{ASYNCPG_URL}?sslmode=prefer")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_require_against_a_server_without_tls_fails_clearly() -> None:
    url = f"{ASYNCPG_URL}?ssl=require"
    engine = make_engine(url)
    try:
        with pytest.raises(Exception, match="rejected SSL upgrade"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    # What a service says at start-up while it waits for its database.
    with pytest.raises(Exception) as caught:
        await dbready.check(url)
    problem = dbready.diagnose(caught.value)
    assert problem is not None
    message = dbready.describe("BOOKING_DATABASE_URL", url, problem, caught.value)
    assert message.startswith("BOOKING_DATABASE_URL: database")
    assert "rejected SSL upgrade" in message
