"""The NATS users of ``choreo up``: the Kubernetes permissions, generated passwords, an operator.

``choreo up`` runs nats-server with ``choreoctl/stack/natsconf/choreo-up.conf``, which
includes ``auth.conf`` (a byte-for-byte copy of ``k8s/base/nats/auth.conf``, the
one source of the permissions) and ``operator.conf``, and lists seven users:
booking, payment, notification, analytics, inventory and gateway, each with its
Kubernetes permissions, and ``operator``, for the operator's tools. Passwords are generated once per data
directory (``choreoctl.stack.devsecrets``) and reach nats-server as the
``<USER>_NATS_PASSWORD`` variables the configuration refers to, and each service
as its ``<SERVICE>_NATS_USER`` and ``<SERVICE>_NATS_PASSWORD``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from choreo.natsidentity import OPERATOR
from choreoctl.stack.devsecrets import SecretStore

#: The services' users, named like the services (auth.conf).
SERVICE_USERS = ("booking", "payment", "notification", "analytics", "inventory", "gateway")
USERS = (*SERVICE_USERS, OPERATOR)
#: The configuration nats-server is started with, and the files it includes.
MAIN_CONFIG = "choreo-up.conf"
CONFIG_FILES = (MAIN_CONFIG, "auth.conf", "operator.conf")


def password_variable(user: str) -> str:
    """The variable holding ``user``'s password (in the configuration and the secrets directory)."""
    return f"{user.upper()}_NATS_PASSWORD"


def packaged_config(name: str) -> str:
    """The text of one of ``CONFIG_FILES`` as shipped in the package."""
    return resources.files("choreoctl.stack").joinpath("natsconf", name).read_text()


def write_server_config(directory: Path) -> Path:
    """Writes ``CONFIG_FILES`` into ``directory`` (replacing older copies); returns the main one."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES:
        with resources.as_file(resources.files("choreoctl.stack").joinpath("natsconf", name)) as source:
            shutil.copyfile(source, directory / name)
    return directory / MAIN_CONFIG


@dataclass(frozen=True)
class NatsUsers:
    """Each user's password.

    Attributes:
        passwords: user -> password, for every one of ``USERS``.
    """

    passwords: Mapping[str, str]

    @classmethod
    def load(cls, store: SecretStore) -> NatsUsers:
        """The passwords of the data directory, generated on its first run."""
        return cls({user: store.get(password_variable(user)) for user in USERS})

    def server_env(self) -> dict[str, str]:
        """The variables nats-server's configuration reads."""
        return {password_variable(user): password for user, password in self.passwords.items()}

    def service_settings(self, service: str) -> dict[str, str]:
        """The service's NATS credentials as settings without its prefix (``NATS_USER``, ...)."""
        return {"NATS_USER": service, "NATS_PASSWORD": self.passwords[service]}

    def url(self, user: str, host: str, port: int) -> str:
        """``nats://user:password@host:port`` (the passwords are URL-safe, see ``devsecrets``)."""
        return f"nats://{user}:{self.passwords[user]}@{host}:{port}"
