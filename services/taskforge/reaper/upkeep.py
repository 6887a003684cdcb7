"""Upkeep the reaper does less often than reclaiming: retention of finished jobs, stream
trimming, and removal of consumers that left.

All three are bounded per run and safe on several replicas: deletions take rows with
``SKIP LOCKED``, trimming never drops an entry that is not delivered and acked, and a
consumer is removed only while it holds nothing (checked atomically in Redis).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

from taskforge import lifecycle
from taskforge.config import Settings
from taskforge.jobs import Status
from taskforge.reaper import entries

log = logging.getLogger("taskforge.reaper")

RETENTION_BATCH = 1000
RETENTION_BUDGET_SECONDS = 5.0


@dataclass
class UpkeepReport:
    """What one upkeep run did."""

    deleted: int = 0
    trimmed: int = 0
    consumers_removed: list[str] = field(default_factory=list)


async def delete_old_jobs(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    batch: int = RETENTION_BATCH,
    budget: float = RETENTION_BUDGET_SECONDS,
) -> int:
    """Delete completed/cancelled jobs past ``retention_completed`` and dead ones past
    ``retention_dead``, a batch per transaction, until none is left or the time budget is used.
    """
    rules = [
        ((Status.COMPLETED, Status.CANCELLED), settings.retention_completed),
        ((Status.DEAD,), settings.retention_dead),
    ]
    deadline = time.monotonic() + budget
    deleted = 0
    for statuses, age in rules:
        while True:
            async with pool.acquire() as conn:
                count = await lifecycle.delete_finished(conn, statuses, age, batch)
            deleted += count
            if count < batch or time.monotonic() > deadline:
                break
    return deleted


async def trim_streams(redis: aioredis.Redis, queues: Iterable[str]) -> int:
    """Trim every queue's stream below its oldest entry still needed."""
    return sum([await entries.trim(redis, queue) for queue in queues])


async def remove_idle_consumers(
    redis: aioredis.Redis, queues: Iterable[str], idle_seconds: float
) -> list[str]:
    """Remove consumers idle past ``idle_seconds`` that hold no entry, on every queue."""
    removed = []
    for queue in queues:
        names = await entries.remove_idle_consumers(redis, queue, int(idle_seconds * 1000))
        removed += [f"{queue}/{name}" for name in names]
    return removed


async def upkeep_once(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, queues: Iterable[str]
) -> UpkeepReport:
    """Retention, trimming and consumer cleanup, once."""
    queues = sorted(queues)
    report = UpkeepReport(
        deleted=await delete_old_jobs(pool, settings),
        trimmed=await trim_streams(redis, queues),
        consumers_removed=await remove_idle_consumers(redis, queues, settings.consumer_idle),
    )
    if report.deleted or report.trimmed or report.consumers_removed:
        log.info(
            "upkeep",
            extra={
                "action": "reaper.upkeep",
                "deleted": report.deleted,
                "trimmed": report.trimmed,
                "consumers_removed": report.consumers_removed,
            },
        )
    return report
