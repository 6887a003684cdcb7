"""Publishes each queue's backlog: Prometheus gauges and a Redis hash the operator reads.

The hash ``taskforge:{<queue>}:backlog`` holds ``due`` (due rows not yet dispatched),
``running`` and ``updated_at`` (Unix seconds); the operator treats old figures as stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, streams
from taskforge.resources import wait_first

log = logging.getLogger("taskforge.scheduler")

PUBLISH_INTERVAL = 2.0


async def known_queues(
    conn: asyncpg.Connection, redis: aioredis.Redis, configured: Sequence[str]
) -> set[str]:
    """Every queue the operator may watch: configured, registered in PostgreSQL, or with a
    stream in Redis. An idle queue needs fresh zeros too, or the operator would call its
    figures stale and never scale its workers to zero."""
    found = set(configured) | set(await lifecycle.registered_queues(conn))
    async for key in redis.scan_iter(match="taskforge:{*}:jobs", count=1000):
        found.add(streams.queue_of(key))
    return found


async def publish_once(
    pool: asyncpg.Pool, redis: aioredis.Redis, configured: Sequence[str] = ()
) -> list[lifecycle.QueueBacklog]:
    """Read the backlog from PostgreSQL and publish it to metrics and Redis."""
    async with pool.acquire() as conn:
        backlogs = await lifecycle.queue_backlogs(conn)
        dead = await lifecycle.dead_count(conn)
        idle = await known_queues(conn, redis, configured)
    now = time.time()
    metrics.DLQ_COUNT.set(dead)
    pipe = redis.pipeline(transaction=False)
    for backlog in backlogs:
        idle.discard(backlog.queue)
        metrics.QUEUE_DEPTH.labels(backlog.queue).set(backlog.due + backlog.queued)
        metrics.OLDEST_JOB_AGE.labels(backlog.queue).set(backlog.oldest_age)
        metrics.RUNNING_JOBS.labels(backlog.queue).set(backlog.running)
        pipe.hset(
            streams.backlog_key(backlog.queue),
            mapping={"due": backlog.due, "running": backlog.running, "updated_at": now},
        )
    # Queues with nothing waiting or running read zero, not their last value.
    for sample in next(iter(metrics.QUEUE_DEPTH.collect())).samples:
        idle.add(sample.labels["queue"])
    for queue in idle - {b.queue for b in backlogs}:
        metrics.QUEUE_DEPTH.labels(queue).set(0)
        metrics.OLDEST_JOB_AGE.labels(queue).set(0)
        metrics.RUNNING_JOBS.labels(queue).set(0)
        pipe.hset(streams.backlog_key(queue), mapping={"due": 0, "running": 0, "updated_at": now})
    await pipe.execute()
    return backlogs


async def run(
    pool: asyncpg.Pool, redis: aioredis.Redis, stop: asyncio.Event, configured: Sequence[str] = ()
) -> None:
    """Publish every couple of seconds until ``stop``; errors are logged, never fatal."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                if await lifecycle.refresh_planner_stats(conn):
                    log.info("jobs table analyzed after growth", extra={"action": "analyze"})
            await publish_once(pool, redis, configured)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
            store = "redis" if isinstance(exc, RedisError) else "postgres"
            metrics.STORE_ERRORS.labels(store, "scheduler").inc()
            log.warning(
                "backlog publish failed", extra={"action": "backlog.error", "error": repr(exc)}
            )
        await wait_first(stop.wait(), timeout=PUBLISH_INTERVAL)
