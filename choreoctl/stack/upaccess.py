"""Who may reach what in ``choreo up``: its nats-server and users, and the gateway's auth.

Without ``--nats-url``, ``choreo up`` starts nats-server with a user per service
(the Kubernetes permissions) and an operator (``choreoctl.stack.natsusers``), and gives
each service its credentials; with ``--nats-url`` that server's users are not
ours to make, and the exported ``<SERVICE>_NATS_*`` variables apply. With
``--auth`` the gateway verifies bearer tokens signed with a dev secret, and
``choreo up`` prints tokens (``choreoctl.stack.devauth``); without, anyone reaching the
gateway may act as any user, which the console says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from choreo.natsidentity import OPERATOR
from choreoctl.stack.console import Console
from choreoctl.stack.devauth import DevAuth
from choreoctl.stack.devsecrets import SECRETS_DIR, SecretStore
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.natsusers import NatsUsers, write_server_config
from choreoctl.stack.ports import resolve_port

DEFAULT_NATS_PORT = 4222


@dataclass
class Access:
    """What the services and their clients are given.

    Attributes:
        nats_url: The NATS server the services use.
        nats: The nats-server started here (None with ``--nats-url``).
        settings: By service, settings without its prefix (NATS credentials, gateway auth).
        operator_url: NATS URL with the operator's credentials (when nats-server is ours).
        tokens: Bearer tokens for the gateway, by what they are for (``user``, ``admin``).
    """

    nats_url: str
    nats: NatsServer | None = None
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    operator_url: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)


async def open_access(
    nats_url: str | None, auth: bool, data_dir: Path, services: Sequence[str], host: str, console: Console
) -> Access:
    """Starts nats-server (unless ``nats_url``) and prepares each service's credentials.

    Raises:
        choreoctl.stack.natsserver.NatsServerError: nats-server did not start.
        choreoctl.stack.devsecrets.SecretFileError: a stored secret is unusable.
    """
    store = SecretStore(data_dir / SECRETS_DIR)
    access = Access(nats_url=nats_url or "", settings={name: {} for name in services})
    if nats_url:
        console.event("nats", f"using {nats_url}")
    else:
        users = NatsUsers.load(store)
        access.nats = await _start_nats(data_dir, console, users, host)
        access.nats_url = access.nats.url
        access.operator_url = users.url(OPERATOR, host, access.nats.port)
        for name in services:
            access.settings[name].update(users.service_settings(name))
    if auth:
        dev = DevAuth.load(store)
        access.settings["gateway"].update(dev.gateway_settings())
        access.tokens = {"user": dev.user_token(), "admin": dev.admin_token()}
    return access


async def _start_nats(data_dir: Path, console: Console, users: NatsUsers, host: str) -> NatsServer:
    port, note = resolve_port(None, DEFAULT_NATS_PORT, host)
    if note:
        console.event("nats", f"NATS port: {note}")
    config = write_server_config(data_dir / "nats" / "config")
    server = NatsServer(data_dir / "nats", port=port, host=host, config_file=config, env=users.server_env())
    await asyncio.to_thread(server.start)
    console.event("nats", f"ready at {server.url} (JetStream store {server.store_dir}; a user per service)")
    return server
