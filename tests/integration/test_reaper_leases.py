"""Leases from the worker's side: heartbeats keep long jobs, a worker that lost its lease
stops its handler, fencing happens before the lease lapses, shutdown hands work back at once,
and a flushed Redis does not disturb jobs already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from taskforge import store, streams
from taskforge.config import Settings
from taskforge.embedded import free_port
from taskforge.jobs import Job
from taskforge.reaper.reclaim import Reclaimer
from taskforge.worker.consumer import Worker
from taskforge.worker.execution import Running
from taskforge.worker.registry import load
from tests.conftest import make_settings
from tests.integration.helpers import (
    job_history,
    running_pipeline,
    submit,
    wait_status,
    wait_terminal,
)


async def _reaping(reclaimer: Reclaimer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await reclaimer.reclaim_once()
        await asyncio.sleep(0.05)


async def test_heartbeat_keeps_a_job_longer_than_the_lease(pool, redis_client, stores):
    settings = make_settings(stores, visibility_timeout=0.6)
    job = await submit(pool, "sleep", payload={"seconds": 2.0})
    stop = asyncio.Event()
    reaper = asyncio.create_task(_reaping(Reclaimer(pool, redis_client, settings), stop))
    try:
        async with running_pipeline(pool, redis_client, settings):
            done = await wait_terminal(pool, [job.id])
    finally:
        stop.set()
        await reaper
    assert (done[job.id].status.value, done[job.id].attempts) == ("completed", 1)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE actor='reaper'") == 0


def _blocking_registry(started: asyncio.Event, cancelled: asyncio.Event):
    registry = load(())

    @registry.job("block")
    async def block(ctx, payload):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return registry


@dataclass
class _Blocked:
    """A worker running one ``block`` job, its handler waiting to be cancelled."""

    job: Job
    worker: Worker
    running: Running
    settings: Settings
    cancelled: asyncio.Event


@contextlib.asynccontextmanager
async def _blocked_job(pool, redis_client, stores) -> AsyncIterator[_Blocked]:
    """A worker (leases of 30 s, a shutdown grace of 0.1 s) running a ``block`` job."""
    settings = make_settings(stores, visibility_timeout=30.0, shutdown_grace=0.1)
    started, cancelled = asyncio.Event(), asyncio.Event()
    job = await submit(pool, "block")
    async with running_pipeline(
        pool, redis_client, settings, _blocking_registry(started, cancelled)
    ) as [worker]:
        await asyncio.wait_for(started.wait(), 20)
        [running] = worker.running.values()
        yield _Blocked(job, worker, running, settings, cancelled)


async def test_worker_that_lost_its_lease_stops_the_handler(pool, redis_client, stores):
    async with _blocked_job(pool, redis_client, stores) as blocked:
        job = blocked.job
        async with pool.acquire() as conn:  # the reaper rescued it meanwhile
            await conn.execute("UPDATE jobs SET status = 'retrying' WHERE id = $1", job.id)
        await blocked.worker.heartbeat_once()
        await asyncio.wait_for(blocked.cancelled.wait(), 10)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "retrying"
        actors = await conn.fetch("SELECT actor FROM job_events WHERE job_id = $1", job.id)
    assert [a["actor"] for a in actors][-1].startswith("worker:")  # the claim, nothing after


async def test_worker_fences_before_its_lease_lapses_when_postgres_is_gone(
    pool, redis_client, stores
):
    async with _blocked_job(pool, redis_client, stores) as blocked:
        worker, running, cancelled = blocked.worker, blocked.running, blocked.cancelled
        broken = await store.create_pool(stores.postgres_url, min_size=0, max_size=1)
        await broken.close()  # acquire raises InterfaceError, as with PostgreSQL down
        healthy, worker.pool = worker.pool, broken
        interval = blocked.settings.heartbeat_interval
        try:
            # Two heartbeats of the lease left: keep running.
            running.lease_deadline = time.monotonic() + 2.5 * interval
            await worker.heartbeat_once()
            assert not cancelled.is_set()
            # It would lapse before the next heartbeat: stop now, before anyone can rescue it.
            running.lease_deadline = time.monotonic() + 0.9 * interval
            await worker.heartbeat_once()
            await asyncio.wait_for(cancelled.wait(), 10)
        finally:
            worker.pool = healthy


class _HungPool:
    """A pool whose every acquire waits forever: PostgreSQL hanging, not refusing."""

    def acquire(self) -> contextlib.AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def forever() -> AsyncIterator[None]:
            await asyncio.Event().wait()
            yield

        return forever()


async def test_a_hung_postgresql_cannot_keep_a_handler_past_its_lease(pool, redis_client, stores):
    async with _blocked_job(pool, redis_client, stores) as blocked:
        worker, running, cancelled = blocked.worker, blocked.running, blocked.cancelled
        healthy, worker.pool = worker.pool, _HungPool()
        heartbeat = asyncio.create_task(worker.heartbeat_once())
        try:
            running.lease_deadline = time.monotonic() + 0.5
            # The heartbeat waits up to its interval (10 s) on the hung pool; the handler is
            # stopped before its lease lapses all the same.
            await asyncio.wait_for(cancelled.wait(), 5)
            assert not heartbeat.done()
            assert running.cancel_reason == "lease"
        finally:
            heartbeat.cancel()
            worker.pool = healthy


async def test_redis_failure_in_a_heartbeat_fences_nothing(pool, redis_client, stores):
    async with _blocked_job(pool, redis_client, stores) as blocked:
        job, worker, running = blocked.job, blocked.worker, blocked.running
        cancelled = blocked.cancelled
        # It would lapse before the next heartbeat unless renewed (not so soon that the
        # timeout sweep fences it first).
        running.lease_deadline = time.monotonic() + 2.0
        dead_redis = streams.connect(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
        healthy, worker.redis = worker.redis, dead_redis
        try:
            await worker.heartbeat_once()
        finally:
            worker.redis = healthy
            await dead_redis.aclose()
        assert not cancelled.is_set()
        assert running.lease_deadline > time.monotonic() + 10  # renewed in PostgreSQL
        async with pool.acquire() as conn:
            lease = await conn.fetchval(
                "SELECT lease_expires_at > now() + interval '20 seconds' FROM jobs WHERE id=$1",
                job.id,
            )
        assert lease


async def test_shutdown_hands_unfinished_jobs_back_at_once(pool, redis_client, stores):
    settings = make_settings(stores, shutdown_grace=0.2)
    started, cancelled = asyncio.Event(), asyncio.Event()
    job = await submit(pool, "block")
    async with running_pipeline(
        pool, redis_client, settings, _blocking_registry(started, cancelled)
    ):
        await asyncio.wait_for(started.wait(), 20)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, run_at <= now() AS due, lease_expires_at FROM jobs WHERE id = $1",
            job.id,
        )
    last = (await job_history(pool, job.id))[-1]
    assert (row["status"], row["due"], row["lease_expires_at"]) == ("pending", True, None)
    assert (last["from_status"], last["to_status"]) == ("running", "pending")
    assert "handed back" in last["error"]
    pending = await redis_client.xpending("taskforge:{default}:jobs", "workers")
    assert pending["pending"] == 0


async def test_running_jobs_finish_after_redis_is_flushed(pool, redis_client, stores):
    settings = make_settings(stores, visibility_timeout=0.9)
    job = await submit(pool, "sleep", payload={"seconds": 1.5})
    async with running_pipeline(pool, redis_client, settings):
        await wait_status(pool, job.id, "running")
        await redis_client.flushdb()  # the heartbeat's touch and the ack find no group
        done = await wait_terminal(pool, [job.id])
    assert (done[job.id].status.value, done[job.id].attempts) == ("completed", 1)


async def test_entries_read_while_postgres_is_down_are_claimed_when_it_is_back(
    pool, redis_client, stores
):
    from taskforge.scheduler.dispatcher import Dispatcher
    from taskforge.worker.consumer import Worker

    settings = make_settings(stores, visibility_timeout=30.0)
    job = await submit(pool, "ping")
    await Dispatcher(pool, redis_client).dispatch_once()
    broken = await store.create_pool(stores.postgres_url, min_size=0, max_size=1)
    await broken.close()  # acquire raises InterfaceError, as with PostgreSQL down
    worker = Worker(broken, redis_client, load(()), settings, "w-outage")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not worker._unclaimed:  # read from Redis, claim failed
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.02)
        worker.pool = worker.finisher.pool = pool  # PostgreSQL is back
        done = await wait_terminal(pool, [job.id])
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert (done[job.id].status.value, done[job.id].attempts) == ("completed", 1)
