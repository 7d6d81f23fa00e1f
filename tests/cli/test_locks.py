"""One owner per data directory and per JetStream store (two nats-servers on one store corrupt it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from choreoctl.stack.dirlock import DirectoryInUseError, DirectoryLock
from choreoctl.stack.natsserver import NatsServer, NatsServerError
from tests.cli.test_up import Up


def test_a_second_nats_server_on_a_store_in_use_is_refused(tmp_path: Path) -> None:
    first = NatsServer(tmp_path / "store")
    second = NatsServer(tmp_path / "store")
    first.start()
    try:
        assert first.process is not None
        with pytest.raises(NatsServerError, match=rf"in use by pid {first.process.pid} \(nats-server\)"):
            second.start()
        assert first.running
    finally:
        second.kill()  # when it was not refused
        first.stop()
    # Stopped: the store is free again.
    again = NatsServer(tmp_path / "store")
    again.start()
    again.stop()


def test_the_store_stays_locked_while_its_server_outlives_the_process_that_started_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    starter = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from choreoctl.stack.natsserver import NatsServer
        server = NatsServer(Path({str(store)!r}))
        server.start()
        print(server.process.pid, flush=True)
        os._exit(0)  # as if killed: no stop, the server keeps running
        """
    )
    # Popen and one line: the server inherits the pipe, so waiting for its end would wait for the server.
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    assert parent.wait(30) == 0
    try:
        with pytest.raises(NatsServerError, match=rf"in use by pid {orphan} "):
            NatsServer(store).start()
    finally:
        os.killpg(orphan, signal.SIGKILL)


def test_the_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from choreoctl.stack.dirlock import DirectoryLock;"
            f"DirectoryLock(Path({str(tmp_path)!r}), 'x.lock').acquire('holder'); print('held', flush=True);"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(DirectoryInUseError, match=rf"pid {holder.pid} \(holder\)"):
        DirectoryLock(tmp_path, "x.lock").acquire("second")
    holder.kill()
    holder.wait()
    with DirectoryLock(tmp_path, "x.lock") as lock:
        lock.acquire("third")
        assert lock.held


@pytest.mark.e2e
@pytest.mark.slow
def test_choreo_up_refuses_a_data_directory_another_one_uses(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "var"), "--grpc-port", "0", "--http-port", "0"]
    args += ["--booking-health-port", "0", "--payment-health-port", "0"]
    first = Up(*args)
    second: Up | None = None
    try:
        first.wait_for(r"nats\s+ready at")
        second = Up(*args)
        code = second.process.wait(30)
        assert code == 2, second.output
        message = second.wait_for(r"in use by pid (\d+) \(choreo up\)")
        assert int(message.group(1)) == first.process.pid
        assert "another --data-dir" in second.output
        assert not re.search(r"nats\s+ready", second.output), "the second one started no nats-server"
        assert first.process.poll() is None, "the first one is untouched"
    finally:
        for up in (second, first):
            if up is not None and up.process.poll() is None:
                up.interrupt()  # a graceful stop also stops its nats-server
            if up is not None:
                up.kill()
