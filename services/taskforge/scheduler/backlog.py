"""Publishes each queue's backlog: Prometheus gauges and a Redis hash the operator reads.

The hash ``taskforge:{<queue>}:backlog`` holds ``due`` (due rows not yet dispatched),
``running`` and ``updated_at`` (Unix seconds); the operator treats old figures as stale.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, streams

log = logging.getLogger("taskforge.scheduler")

PUBLISH_INTERVAL = 2.0


async def publish_once(pool: asyncpg.Pool, redis: aioredis.Redis) -> list[lifecycle.QueueBacklog]:
    """Read the backlog from PostgreSQL and publish it to metrics and Redis."""
    async with pool.acquire() as conn:
        backlogs = await lifecycle.queue_backlogs(conn)
        dead = await lifecycle.dead_count(conn)
    now = time.time()
    metrics.DLQ_COUNT.set(dead)
    seen = set()
    pipe = redis.pipeline(transaction=False)
    for backlog in backlogs:
        seen.add(backlog.queue)
        metrics.QUEUE_DEPTH.labels(backlog.queue).set(backlog.due + backlog.queued)
        metrics.OLDEST_JOB_AGE.labels(backlog.queue).set(backlog.oldest_age)
        metrics.RUNNING_JOBS.labels(backlog.queue).set(backlog.running)
        pipe.hset(
            streams.backlog_key(backlog.queue),
            mapping={"due": backlog.due, "running": backlog.running, "updated_at": now},
        )
    # Queues that emptied since the last round must read zero, not their last value.
    for sample in next(iter(metrics.QUEUE_DEPTH.collect())).samples:
        queue = sample.labels["queue"]
        if queue not in seen:
            metrics.QUEUE_DEPTH.labels(queue).set(0)
            metrics.OLDEST_JOB_AGE.labels(queue).set(0)
            metrics.RUNNING_JOBS.labels(queue).set(0)
            pipe.hset(
                streams.backlog_key(queue),
                mapping={"due": 0, "running": 0, "updated_at": now},
            )
    await pipe.execute()
    return backlogs


async def run(pool: asyncpg.Pool, redis: aioredis.Redis, stop: asyncio.Event) -> None:
    """Publish every couple of seconds until ``stop``; errors are logged, never fatal."""
    while not stop.is_set():
        try:
            await publish_once(pool, redis)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
            log.warning(
                "backlog publish failed", extra={"action": "backlog.error", "error": repr(exc)}
            )
        try:
            await asyncio.wait_for(stop.wait(), PUBLISH_INTERVAL)
        except TimeoutError:
            pass
