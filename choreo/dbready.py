"""A service's databases at start-up: reachable, existing, accepting us; or one line saying why not.

Before a service builds anything it checks each PostgreSQL database its
settings name (``BOOKING_DATABASE_URL``, ``PAYMENT_PROVIDER_LEDGER_URL``, ...):

- **does not exist** or **refuses us** (authentication, no such role): waiting
  cannot fix it, so the service logs one line naming the variable and what to
  do (``createdb ...``), and exits with ``os.EX_CONFIG``, which ``choreo up``'s
  supervisor does not restart;
- **unreachable** (connection refused, timeout, a server that is starting):
  a database that is starting must not crash-loop the service, so it waits,
  retrying with capped backoff, and says so once, then once a minute.

``create_missing`` is what ``choreo up`` does before starting the services:
create a missing database through the server's ``postgres`` maintenance
database, if the user may, or say which ``createdb`` command to run.
Whether a failure is worth waiting for is ``choreo.errors.classify``'s call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import shlex
import time
from collections.abc import Mapping

from pydantic_settings import BaseSettings
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from choreo.db import is_sqlite, normalize_url, postgres_tls
from choreo.errors import Failure, classify
from choreo.retry import Backoff

log = logging.getLogger(__name__)

#: Seconds one connection attempt may take (a host that drops packets must not hang start-up).
CONNECT_TIMEOUT = 5.0
_MISSING_DATABASE = "3D000"  # invalid_catalog_name
_DUPLICATE_DATABASE = "42P04"
_AUTHORIZATION_CLASS = "28"  # invalid authorization specification, invalid password


class Problem(enum.Enum):
    """Why a database cannot be used."""

    MISSING = "does not exist"
    REFUSED = "refused the connection"
    UNREACHABLE = "is unreachable"


class DatabaseUnusable(Exception):
    """A database that waiting will not fix; ``str()`` is the one line to show.

    Attributes:
        variable: The environment variable that names it.
        problem: What is wrong.
    """

    def __init__(self, variable: str, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.variable = variable
        self.problem = problem


def database_urls(settings: BaseSettings) -> dict[str, str]:
    """Each database URL of ``settings``, by the environment variable that sets it."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    urls: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name.endswith("_url") and isinstance(value, str) and _is_database_url(value):
            urls[f"{prefix}{name}".upper()] = value
    return urls


def postgres_urls(environ: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The PostgreSQL URLs among the ``<PREFIX>..._URL`` variables of ``environ``."""
    return {
        key: value
        for key, value in sorted(environ.items())
        if key.startswith(prefixes) and key.endswith("_URL") and _is_postgres(value)
    }


def _is_database_url(value: str) -> bool:
    return is_sqlite(normalize_url(value)) or _is_postgres(value)


def _is_postgres(value: str) -> bool:
    return normalize_url(value).startswith("postgresql")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of what it wraps, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str):
            return state
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return None


def diagnose(exc: BaseException) -> Problem | None:
    """What a failed connection attempt means, or ``None`` when it is none of the known problems."""
    state = sqlstate(exc)
    if state == _MISSING_DATABASE:
        return Problem.MISSING
    if state is not None and state.startswith(_AUTHORIZATION_CLASS):
        return Problem.REFUSED
    if classify(exc) is Failure.TRANSIENT:
        return Problem.UNREACHABLE
    return None


def createdb_command(url: str) -> str:
    """The ``createdb`` command that creates the database ``url`` names (no password in it)."""
    parsed = make_url(normalize_url(url))
    args = ["createdb"]
    if parsed.host:
        args += ["-h", parsed.host]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    if parsed.username:
        args += ["-U", parsed.username]
    args.append(parsed.database or "")
    return shlex.join(args)


def _where(parsed: URL) -> str:
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy's wrapper adds a prefix and a link)."""
    inner = getattr(exc, "orig", None) or exc
    words = str(inner).strip().splitlines()
    return words[0] if words else type(inner).__name__


def describe(variable: str, url: str, problem: Problem, exc: BaseException) -> str:
    """One line: which variable, which database, what is wrong, what to do."""
    parsed = make_url(normalize_url(url))
    where = f"database {parsed.database!r} on {_where(parsed)}"
    if problem is Problem.MISSING:
        return (
            f"{variable}: {where} does not exist; create it with: {createdb_command(url)}"
            " (choreo up creates it when the user may)"
        )
    if problem is Problem.REFUSED:
        return (
            f"{variable}: {where} refused user {parsed.username!r}: {_reason(exc)};"
            f" check the user and password in {variable}"
        )
    return f"{variable}: {where} is unreachable ({_reason(exc)})"


async def check(url: str) -> None:
    """Connects to ``url`` once and runs ``SELECT 1``; raises what the driver raised."""
    plain, tls = postgres_tls(normalize_url(url))
    engine = create_async_engine(plain, poolclass=NullPool, connect_args={"timeout": CONNECT_TIMEOUT, **tls})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def wait_for(
    variable: str, url: str, *, first_delay: float = 0.5, max_delay: float = 10.0, say_every: float = 60.0
) -> None:
    """Returns once ``url`` accepts a connection; waits while it is unreachable.

    Raises:
        DatabaseUnusable: It does not exist or refuses us.
    """
    started = time.monotonic()
    said_at: float | None = None
    retries = Backoff(first_delay, max_delay).start()
    while True:
        try:
            await check(url)
        except Exception as exc:
            problem = diagnose(exc)
            if problem is None:
                raise
            if problem is not Problem.UNREACHABLE:
                raise DatabaseUnusable(variable, problem, describe(variable, url, problem, exc)) from exc
            delay = retries.next()
            now = time.monotonic()
            if said_at is None or now - said_at >= say_every:
                waited = f"; still waiting after {now - started:.0f}s" if said_at is not None else ""
                log.warning(
                    "%s%s; retrying with backoff up to %.0fs",
                    describe(variable, url, problem, exc),
                    waited,
                    max_delay,
                )
                said_at = now
            await asyncio.sleep(delay)
            continue
        if retries.failures:
            log.warning(
                "%s: database reachable after %.1fs (%d failed attempts)",
                variable,
                time.monotonic() - started,
                retries.failures,
            )
        return


async def wait_for_all(settings: BaseSettings) -> None:
    """``wait_for`` on each PostgreSQL database ``settings`` names, in turn."""
    for variable, url in database_urls(settings).items():
        if _is_postgres(url):
            await wait_for(variable, url)


async def create_missing(variable: str, url: str) -> str | None:
    """Creates the database ``url`` names when it does not exist.

    Returns:
        What was done, for the console (``None``: nothing to do, or a problem the
        service reports itself, such as an unreachable server).

    Raises:
        DatabaseUnusable: It does not exist and cannot be created (with the ``createdb`` command).
    """
    try:
        await check(url)
        return None
    except Exception as exc:
        if diagnose(exc) is not Problem.MISSING:
            return None
    parsed, tls = postgres_tls(normalize_url(url))
    name = parsed.database or ""
    maintenance = create_async_engine(
        parsed.set(database="postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",  # CREATE DATABASE cannot run in a transaction
        connect_args={"timeout": CONNECT_TIMEOUT, **tls},
    )
    try:
        async with maintenance.connect() as conn:
            quoted = maintenance.dialect.identifier_preparer.quote(name)
            await conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    except Exception as exc:
        if sqlstate(exc) == _DUPLICATE_DATABASE:
            return None  # another service's variable named it too, or someone was quicker
        raise DatabaseUnusable(
            variable,
            Problem.MISSING,
            f"{variable}: database {name!r} on {_where(parsed)} does not exist and could not be created"
            f" ({_reason(exc)}); create it with: {createdb_command(url)}",
        ) from exc
    finally:
        await maintenance.dispose()
    return f"{variable}: created database {name!r} on {_where(parsed)}"
