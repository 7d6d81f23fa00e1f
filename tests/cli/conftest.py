"""Helpers of the ``choreo`` CLI tests: stand-in services, nats-server as ``choreo up`` runs it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from choreo import natsclient
from choreo.natsidentity import inbox_prefix
from choreoctl.stack.devsecrets import SecretStore
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.natsusers import CONFIG_FILES, NatsUsers, write_server_config
from choreoctl.stack.ports import free_port
from choreoctl.stack.supervisor import ProcessSpec
from tests.cli.upprocess import ANY_PORT, ROOT, Up
from tests.natssession import Session

STANDIN = Path(__file__).with_name("standin_service.py")

StandinFactory = Callable[..., ProcessSpec]


@pytest.fixture
def standin(tmp_path: Path) -> StandinFactory:
    """Makes the spec of a stand-in service on a free port (see standin_service.py)."""

    def make(name: str, mode: str = "normal") -> ProcessSpec:
        port = free_port()
        return ProcessSpec(
            name=name,
            argv=[sys.executable, str(STANDIN), str(port), mode],
            env={"PATH": "/usr/bin:/bin"},
            log_file=tmp_path / "logs" / f"{name}.log",
            ready_url=f"http://127.0.0.1:{port}/readyz",
        )

    return make


@pytest.fixture
def up_nats(tmp_path: Path) -> Iterator[tuple[NatsServer, NatsUsers]]:
    """nats-server as `choreo up` runs it."""
    users = NatsUsers.load(SecretStore(tmp_path / "secrets"))
    config = write_server_config(tmp_path / "config")
    assert sorted(p.name for p in config.parent.iterdir()) == sorted(CONFIG_FILES)
    server = NatsServer(tmp_path / "store", config_file=config, env=users.server_env())
    server.start()
    yield server, users
    server.kill()


Connect = Callable[[str], Awaitable[Session]]


@pytest.fixture
async def connect(up_nats: tuple[NatsServer, NatsUsers]) -> AsyncIterator[Connect]:
    server, users = up_nats
    sessions: list[Session] = []

    async def as_user(user: str) -> Session:
        session = Session(nc=NATS())

        async def on_error(exc: Exception) -> None:
            session.errors.append(str(exc))

        session.nc = await natsclient.connect(
            server.url,
            user=user,
            password=users.passwords[user],
            error_cb=on_error,
            allow_reconnect=False,
            inbox_prefix=inbox_prefix(user),
        )
        sessions.append(session)
        return session

    yield as_user
    for session in sessions:
        await session.nc.close()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[type[Up]]:
    started: list[Up] = []

    class Started(Up):
        def __init__(self, *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> None:
            super().__init__("--data-dir", str(tmp_path / "var"), *ANY_PORT, *args, env=env, cwd=cwd)
            started.append(self)

    yield Started
    for up in started:
        up.kill()
