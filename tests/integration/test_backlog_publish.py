"""The scheduler publishes every known queue's backlog for the operator, idle ones too."""

from __future__ import annotations

import time

from taskforge import streams
from taskforge.scheduler.backlog import publish_once
from tests.integration.helpers import submit


async def test_due_rows_and_idle_queues_are_published_fresh(pool, redis_client):
    for _ in range(3):
        await submit(pool, "ping", queue="busy")
    await submit(pool, "ping", queue="later", delay_seconds=3600)
    await streams.ensure_groups(redis_client, ["old-stream"])
    before = time.time()
    await publish_once(pool, redis_client, configured=["configured-idle"])
    for queue, due in [("busy", 3), ("later", 0), ("configured-idle", 0), ("old-stream", 0)]:
        figures = await redis_client.hgetall(streams.backlog_key(queue))
        assert int(figures[b"due"]) == due, queue
        assert int(figures[b"running"]) == 0
        assert float(figures[b"updated_at"]) >= before - 1


async def test_emptied_queue_reads_zero_not_its_last_value(pool, redis_client):
    job = await submit(pool, "ping", queue="drains")
    await publish_once(pool, redis_client)
    assert int((await redis_client.hgetall(streams.backlog_key("drains")))[b"due"]) == 1
    async with pool.acquire() as conn:
        await conn.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", job.id)
    await publish_once(pool, redis_client)
    assert int((await redis_client.hgetall(streams.backlog_key("drains")))[b"due"]) == 0
