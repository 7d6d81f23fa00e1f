"""Port choice: the conventional port when free, a free one (said) when taken, an error when asked for."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from choreoctl.stack.ports import PortUnavailableError, free_port, port_is_free, resolve_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_default_port_is_used_when_free() -> None:
    port = free_port()
    assert resolve_port(None, port) == (port, None)


def test_taken_default_port_is_replaced_and_said(taken_port: int) -> None:
    assert not port_is_free(taken_port)
    port, note = resolve_port(None, taken_port)
    assert port != taken_port
    assert port_is_free(port)
    assert note == f"{taken_port} is taken; using {port}"


def test_explicit_taken_port_is_an_error(taken_port: int) -> None:
    with pytest.raises(PortUnavailableError, match=str(taken_port)):
        resolve_port(taken_port, 8080)


def test_zero_means_any_free_port_not_already_chosen() -> None:
    first, note = resolve_port(0, 8080)
    assert note is None
    second, _ = resolve_port(0, 8080, exclude=[first])
    assert second != first


def test_a_port_handed_out_already_is_not_the_default_again() -> None:
    default = free_port()
    port, note = resolve_port(None, default, exclude=[default])
    assert port != default
    assert note is not None
