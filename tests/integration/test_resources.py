"""What every deployable's application shares: its PostgreSQL pool as a cleanup_ctx, and
connections an operator can tell apart in pg_stat_activity."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from taskforge import resources, store
from taskforge.scheduler.dispatcher import Dispatcher, listen


async def _named_backends(pool: asyncpg.Pool, name: str, query_prefix: str) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2",
            name,
            query_prefix + "%",
        )
    return count


async def _wait_for_backend(pool: asyncpg.Pool, name: str, query_prefix: str) -> None:
    deadline = time.monotonic() + 10
    while not await _named_backends(pool, name, query_prefix):
        assert time.monotonic() < deadline, f"no {name} backend running {query_prefix!r}"
        await asyncio.sleep(0.02)


async def test_a_deployable_names_its_postgres_connections_after_itself(settings, clean):
    """pg_stat_activity tells an operator which deployable holds a lock or runs a query."""
    app = resources.base_app(settings)
    app[resources.SERVICE] = "worker"
    context = resources.postgres_ctx(app)
    await anext(context)
    try:
        async with app[resources.POOL].acquire() as conn:
            mine = await conn.fetchval("SELECT pg_backend_pid()")
            named = await conn.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1", mine
            )
        assert named == "taskforge-worker"
    finally:
        await anext(context, None)


async def test_a_deployable_queued_on_the_migration_lock_says_who_it_is(settings, pool):
    """Replicas starting together queue on the migration lock: each waiting connection
    carries its deployable's name, as its pool will."""
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", store.MIGRATION_LOCK_ID)
        connecting = asyncio.create_task(
            store.connect_with_retry(settings.postgres_url, application_name="taskforge-api")
        )
        try:
            await _wait_for_backend(pool, "taskforge-api", "SELECT pg_advisory_lock")
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", store.MIGRATION_LOCK_ID)
        await (await connecting).close()


async def test_the_schedulers_listen_connection_is_named(settings, pool, redis_client):
    stop = asyncio.Event()
    listening = asyncio.create_task(
        listen(settings.postgres_url, Dispatcher(pool, redis_client), stop)
    )
    try:
        await _wait_for_backend(pool, "taskforge-scheduler", "LISTEN")
    finally:
        stop.set()
        await asyncio.wait_for(listening, 10)
