"""A dispatch round is three round trips: the due rows, mark queued (which also tells when
the next waiting row is due), and "COMMIT; BEGIN"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import redis.asyncio as aioredis

from taskforge import lifecycle
from taskforge.scheduler.dispatcher import Dispatcher
from tests.integration.helpers import RecordingConnection, job_values, submit, wait_status


class RecordingPool:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    async def acquire(self) -> RecordingConnection:
        return RecordingConnection(await self.pool.acquire(), self.statements)

    async def release(self, conn: RecordingConnection) -> None:
        await self.pool.release(conn.conn)


@asynccontextmanager
async def dispatching(
    pool: asyncpg.Pool, redis: aioredis.Redis, poll_interval: float
) -> AsyncIterator[tuple[Dispatcher, RecordingPool]]:
    recording = RecordingPool(pool)
    dispatcher = Dispatcher(recording, redis, poll_interval=poll_interval)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher, recording
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_trickle_round_is_three_round_trips(pool, redis_client):
    async with dispatching(pool, redis_client, poll_interval=0.3) as (dispatcher, recording):
        await asyncio.sleep(0.1)  # the first round (and its read of paused queues) is over
        recording.statements.clear()
        job = await submit(pool)
        dispatcher.notified()
        await wait_status(pool, job.id, "queued", timeout=5)
        await asyncio.sleep(0.05)
        sent = list(recording.statements)
    assert len(sent) == 3, sent
    assert sent[0].startswith("SELECT * FROM taskforge_select_due(")
    assert "taskforge_mark_queued_next_due(" in sent[1]
    assert sent[2] == "COMMIT; BEGIN"


async def test_a_round_that_dispatched_learns_when_the_next_waiting_job_is_due(pool, redis_client):
    """One job due now, one in 0.6 s: the round that sends the first sleeps until the
    second is due, not for the poll interval, and no NOTIFY comes to wake it."""
    async with pool.acquire() as conn:
        now_job, later_job = (
            result.job
            for result in await lifecycle.submit_batch(
                conn, [job_values(), job_values(delay_seconds=0.6)], [None, None]
            )
        )
    async with dispatching(pool, redis_client, poll_interval=30.0):
        await wait_status(pool, now_job.id, "queued", timeout=5)
        await wait_status(pool, later_job.id, "queued", timeout=5)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT j.run_at, e.at FROM jobs j JOIN job_events e ON e.job_id = j.id"
            " WHERE j.id = $1 AND e.to_status = 'queued'",
            later_job.id,
        )
    assert timedelta(0) <= row["at"] - row["run_at"] < timedelta(seconds=1)


async def test_mark_queued_tells_the_next_due_time_without_the_rows_it_marked(pool):
    await submit(pool)
    await submit(pool, queue="paused")
    async with pool.acquire() as conn:
        await lifecycle.submit_batch(
            conn,
            [job_values(delay_seconds=60), job_values(queue="paused", delay_seconds=5)],
            [None, None],
        )
        async with conn.transaction():
            due = await lifecycle.select_due(conn, 10, ["paused"], lifecycle.new_dispatch_lock())
            assert len(due) == 1
            until = await lifecycle.mark_queued_next_due(conn, due, ["1-0"], ["paused"])
            assert until is not None and 59 < until <= 60
        async with conn.transaction():
            # Without a skip list it does not ask; the paused queue's rows count when asked.
            due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
            assert len(due) == 1
            assert await lifecycle.mark_queued_next_due(conn, due, ["2-0"], None) is None
        async with conn.transaction():
            assert 4 < (await lifecycle.seconds_until_next_due(conn, []) or 0) <= 5
        statuses = await conn.fetch(
            "SELECT j.status, count(e.*) AS events FROM jobs j"
            " JOIN job_events e ON e.job_id = j.id WHERE j.stream_id IS NOT NULL"
            " GROUP BY j.id, j.status"
        )
    assert sorted((row["status"], row["events"]) for row in statuses) == [
        ("queued", 2),
        ("queued", 2),
    ]
