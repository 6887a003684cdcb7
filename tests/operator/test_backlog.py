"""Reading a queue's backlog from a real Redis: stream lag + pending + the scheduler's due rows."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from taskforge.operator.backlog import (
    GROUP,
    BacklogUnavailable,
    figures_key,
    read_backlog,
    stream_key,
)

STALE_AFTER = 30.0
CAP = 10_000


async def add(redis: aioredis.Redis, queue: str, count: int) -> list[bytes]:
    pipe = redis.pipeline(transaction=False)
    for index in range(count):
        pipe.xadd(stream_key(queue), {"job": str(index)})
    return list(await pipe.execute())


async def deliver(redis: aioredis.Redis, queue: str, count: int) -> list[bytes]:
    reply: Any = await redis.xreadgroup(GROUP, "worker-1", {stream_key(queue): ">"}, count=count)
    return [entry_id for _, entries in reply for entry_id, _ in entries]


async def publish(
    redis: aioredis.Redis, queue: str, due: int, running: int, age: float = 0.0
) -> None:
    await redis.hset(
        figures_key(queue),
        mapping={"due": due, "running": running, "updated_at": time.time() - age},
    )


async def test_backlog_counts_lag_pending_and_due_rows(redis: aioredis.Redis, queue: str) -> None:
    await redis.xgroup_create(stream_key(queue), GROUP, id="$", mkstream=True)
    await add(redis, queue, 10)
    delivered = await deliver(redis, queue, 4)
    await redis.xack(stream_key(queue), GROUP, delivered[0])
    await publish(redis, queue, due=5, running=3)

    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)

    assert (backlog.stream.lag, backlog.stream.pending) == (6, 3)
    assert backlog.total == 6 + 3 + 5
    assert (backlog.running, backlog.stale) == (3, False)


async def test_a_queue_without_a_stream_has_no_stream_backlog(
    redis: aioredis.Redis, queue: str
) -> None:
    await publish(redis, queue, due=7, running=0)
    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)
    assert backlog.total == 7


async def test_a_stream_no_worker_joined_yet_counts_every_entry(
    redis: aioredis.Redis, queue: str
) -> None:
    await add(redis, queue, 12)
    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)
    assert (backlog.stream.lag, backlog.stream.pending) == (12, 0)


async def test_lag_redis_cannot_compute_is_counted_from_the_stream(
    redis: aioredis.Redis, queue: str
) -> None:
    await redis.xgroup_create(stream_key(queue), GROUP, id="$", mkstream=True)
    ids = await add(redis, queue, 6)
    await deliver(redis, queue, 2)
    # Deleting an undelivered entry makes XINFO GROUPS report lag as nil (Redis 7).
    await redis.xdel(stream_key(queue), ids[3])

    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)

    assert (backlog.stream.lag, backlog.stream.pending) == (3, 2)
    capped = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=2)
    assert capped.stream.lag == 2


async def test_old_figures_are_stale_and_their_due_rows_not_counted(
    redis: aioredis.Redis, queue: str
) -> None:
    await add(redis, queue, 4)
    await publish(redis, queue, due=50, running=2, age=STALE_AFTER + 1)

    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)

    assert backlog.stale
    assert backlog.total == 4
    assert backlog.running is None


async def test_missing_or_malformed_figures_are_stale(redis: aioredis.Redis, queue: str) -> None:
    assert (await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)).stale
    await redis.hset(figures_key(queue), mapping={"due": "many", "running": 0, "updated_at": 1})
    backlog = await read_backlog(redis, queue, stale_after=STALE_AFTER, lag_cap=CAP)
    assert backlog.stale
    assert backlog.figures is None


async def test_unreachable_redis_raises_backlog_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        with pytest.raises(BacklogUnavailable):
            await read_backlog(client, "default", stale_after=STALE_AFTER, lag_cap=CAP)
    finally:
        await client.aclose()
