"""Chaos fixtures: a cluster of deployable processes (always stopped), private stores a test
may crash, and the figures each scenario reports (printed at the end of the run, and written
to ``chaos-figures.json`` under pytest's base temporary directory).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from taskforge import store
from tests.chaos.harness import Cluster
from tests.chaos.servers import PrivatePostgres, PrivateRedis
from tests.conftest import Stores

FIGURES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., None]:
    """Record one scenario's figures (jobs, re-runs, time to recover, ...)."""
    collected = request.config.stash.setdefault(FIGURES, [])

    def record(**values: Any) -> None:
        collected.append({"scenario": request.node.name, **values})
        path = tmp_path_factory.getbasetemp() / "chaos-figures.json"
        path.write_text(json.dumps(collected, indent=2, ensure_ascii=False))

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    collected = config.stash.get(FIGURES, [])
    if collected:
        terminalreporter.section("chaos figures")
        for row in collected:
            terminalreporter.write_line(json.dumps(row, ensure_ascii=False))


@asynccontextmanager
async def running(cluster: Cluster) -> AsyncIterator[Cluster]:
    """Start the cluster; stop it whatever happens, showing its logs when the test failed."""
    try:
        await cluster.start()
        yield cluster
    except BaseException:
        print(cluster.log_tails())
        await asyncio.to_thread(cluster.stop)
        raise
    codes = await asyncio.to_thread(cluster.stop)
    unclean = {n: c for n, c in codes.items() if c != 0 and n not in cluster.stopped}
    assert not unclean, f"deployables did not stop cleanly on SIGTERM: {unclean}\n" + (
        cluster.log_tails()
    )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres(tmp_path / "postgres")
    server.start()
    try:
        conn = await asyncpg.connect(server.admin_url)
        try:
            await conn.execute("CREATE DATABASE taskforge")
        finally:
            await conn.close()
        await store.migrate_url(server.url)
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
def shared_stores(stores: Stores, clean: None) -> Stores:
    """The session's database and Redis db index, emptied."""
    return stores
