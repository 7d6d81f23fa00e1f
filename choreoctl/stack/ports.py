"""Choosing local TCP ports: the conventional one when it is free, else any free one."""

from __future__ import annotations

import socket
from collections.abc import Collection


class PortUnavailableError(RuntimeError):
    """A port that was asked for explicitly is already in use."""


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when nothing listens on ``port`` (checked on the wildcard address by default).

    ``SO_REUSEADDR`` makes a port that only has connections in TIME_WAIT count as
    free, as it is for the servers that will bind it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", exclude: Collection[int] = ()) -> int:
    """A port the kernel reports free (not one of ``exclude``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise PortUnavailableError("no free port found")  # pragma: no cover - the kernel always has one


def resolve_port(
    requested: int | None, default: int, host: str = "127.0.0.1", exclude: Collection[int] = ()
) -> tuple[int, str | None]:
    """The port to use, and a note for the user when it is not the one they would expect.

    Args:
        requested: ``None`` for "the default if free", 0 for "any free port", else that port.
        default: The conventional port.
        host: Interface the free port is picked on.
        exclude: Ports already handed out.

    Raises:
        PortUnavailableError: ``requested`` was a specific port and it is taken.
    """
    if requested is None:
        if default not in exclude and port_is_free(default):
            return default, None
        port = free_port(host, exclude)
        return port, f"{default} is taken; using {port}"
    if requested == 0:
        return free_port(host, exclude), None
    if requested in exclude or not port_is_free(requested):
        raise PortUnavailableError(f"port {requested} is already in use")
    return requested, None
