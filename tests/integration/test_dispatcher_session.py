"""The dispatcher's loop begins each round's transaction as it commits the last one.

An idle dispatcher therefore sits in an open transaction. These tests hold it to what makes
that safe: it holds no snapshot and no transaction id (nothing held back from VACUUM), the
rows and history it writes carry the time of the dispatch (not the time its transaction
began), and a lost connection costs a retry, not the dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis

from taskforge.scheduler.dispatcher import Dispatcher, _rollback
from tests.integration.helpers import submit, wait_status

IDLE = 0.4  # seconds the dispatcher waits between rounds (its poll interval here)


@asynccontextmanager
async def dispatching(pool: asyncpg.Pool, redis: aioredis.Redis) -> AsyncIterator[Dispatcher]:
    stop = asyncio.Event()
    dispatcher = Dispatcher(pool, redis, poll_interval=IDLE)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _session(pool: asyncpg.Pool) -> asyncpg.Record:
    """The dispatcher's backend as pg_stat_activity shows it (the only other one in this db
    that is not ours)."""
    deadline = time.monotonic() + 5
    while True:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT pid, state, backend_xid, backend_xmin FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"
            )
        if row is not None:
            return row
        assert time.monotonic() < deadline, "the dispatcher never held a transaction open"
        await asyncio.sleep(0.02)


async def test_an_idle_dispatcher_holds_no_snapshot_and_no_transaction_id(pool, redis_client):
    await submit(pool)  # a round that locked and wrote rows, then committed
    async with dispatching(pool, redis_client):
        await asyncio.sleep(IDLE * 1.5)  # idle rounds too, with their next-due queries
        session = await _session(pool)
        assert session["backend_xid"] is None and session["backend_xmin"] is None


async def test_a_dispatch_records_its_own_time_not_when_its_transaction_began(pool, redis_client):
    async with dispatching(pool, redis_client) as dispatcher:
        await _session(pool)
        await asyncio.sleep(IDLE / 2)  # the transaction begun ahead is this old by now
        job = await submit(pool)
        dispatcher.notified()
        await wait_status(pool, job.id, "queued", timeout=5)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT created_at, updated_at FROM jobs WHERE id = $1", job.id)
        events = await conn.fetch(
            "SELECT to_status, at FROM job_events WHERE job_id = $1 ORDER BY id", job.id
        )
    assert [e["to_status"] for e in events] == ["pending", "queued"]
    assert events[1]["at"] >= events[0]["at"]
    assert row["updated_at"] >= row["created_at"]


async def test_a_dispatcher_whose_connection_was_killed_goes_on(pool, redis_client):
    async with dispatching(pool, redis_client) as dispatcher:
        session = await _session(pool)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", session["pid"])
        job = await submit(pool)
        dispatcher.notified()
        await wait_status(pool, job.id, "queued", timeout=10)


async def test_ending_a_session_rolls_back_only_an_open_transaction(stores, clean):
    """A session that committed is given back without a ROLLBACK (PostgreSQL answers one
    outside a transaction with a WARNING in its log); an open transaction is rolled back."""
    conn = await asyncpg.connect(stores.postgres_url)
    warnings: list[str] = []
    conn.add_log_listener(lambda _, message: warnings.append(message.message))
    try:
        await _rollback(conn)
        await conn.execute("BEGIN")
        await _rollback(conn)
        assert not conn.is_in_transaction()
        await conn.fetchval("SELECT 1")  # notices arrive before the next answer
        assert warnings == []
    finally:
        await conn.close()
