"""How far a worker's claims run ahead of the outcomes it has not recorded yet."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import asyncpg

from taskforge import lifecycle
from taskforge.jobs import Status
from tests.integration.helpers import running_pipeline, submit, wait_terminal


async def running_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'")
    return count


async def settled_running_count(pool: asyncpg.Pool, quiet: float = 0.5) -> int:
    """The running count once it has not changed for ``quiet`` seconds."""
    last, since = -1, time.monotonic()
    deadline = since + 15.0
    while time.monotonic() < deadline:
        count = await running_count(pool)
        if count != last:
            last, since = count, time.monotonic()
        elif count and time.monotonic() - since >= quiet:
            return count
        await asyncio.sleep(0.05)
    raise AssertionError(f"the running count never settled (last {last})")


async def test_claims_stop_three_batches_ahead_of_a_finish_that_does_not_return(
    pool, redis_client, settings, monkeypatch
):
    """While PostgreSQL does not answer the finish, a worker claims while the finisher holds
    up to two batches of outcomes (one recording, one waiting), and then stops: three times
    its concurrency claimed and unrecorded, no more. Once the finish returns, all complete."""
    settings = replace(settings, worker_concurrency=4)
    answered = asyncio.Event()
    finish = lifecycle.finish

    async def unanswered_finish(*args: Any, **kwargs: Any) -> Any:
        await answered.wait()
        return await finish(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "finish", unanswered_finish)
    jobs = [await submit(pool, "ping") for _ in range(30)]
    async with running_pipeline(pool, redis_client, settings):
        try:
            assert await settled_running_count(pool) == 3 * settings.worker_concurrency
        finally:
            answered.set()  # else the worker's shutdown waits on the finish for ever
        done = await wait_terminal(pool, [job.id for job in jobs])
    assert {job.status for job in done.values()} == {Status.COMPLETED}
