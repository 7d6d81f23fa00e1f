"""An exclusive lock on a directory, held by the operating system: one owner at a time.

Two ``choreo up`` on one data directory, or two nats-servers on one JetStream
store, corrupt it. The owner takes ``fcntl.flock`` on a file in the directory;
the kernel releases it when the last descriptor of that file closes, which
includes the owner dying by SIGKILL or a power cut, so a stale lock file never
blocks anyone. The file holds the owner's pid, for the refusal message only.

A child process that is given the descriptor (``subprocess.Popen(pass_fds=...)``)
keeps the lock while it lives, even after its parent is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType


class DirectoryInUseError(RuntimeError):
    """Another process holds the directory's lock.

    Attributes:
        directory: The locked directory.
        owner: What the lock file says about its holder (``pid 123 (choreo up)``), if anything.
    """

    def __init__(self, directory: Path, owner: str) -> None:
        self.directory = directory
        self.owner = owner
        held_by = f"by {owner}" if owner else "by another process"
        super().__init__(f"{directory} is in use {held_by}")


class DirectoryLock:
    """``flock`` on ``<directory>/<name>``.

    Args:
        directory: The directory to own (created if missing).
        name: File name of the lock.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        """The locked descriptor (to hand to a child that must keep the lock)."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not locked")
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, owner: str) -> None:
        """Takes the lock without waiting and records ``owner`` (with this pid) in the file.

        Raises:
            DirectoryInUseError: Another process holds it.
        """
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DirectoryInUseError(self.directory, holder) from None
        self._fd = fd
        self.record_owner(os.getpid(), owner)

    def record_owner(self, pid: int, owner: str) -> None:
        """Writes who holds the lock (e.g. the child that was handed it)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {pid} ({owner})\n".encode(), 0)

    def release(self) -> None:
        """Closes this process's descriptor (a child given it may still hold the lock)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
