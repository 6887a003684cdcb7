"""Redis failures under a running system: FLUSHDB mid-run (the test's own db index only), a
worker killed and then Redis flushed, and a crash and restart of a private redis-server.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from tests.chaos.conftest import running
from tests.chaos.harness import (
    Cluster,
    reruns,
    rescued_by_reason,
    run_problems,
    unfinished_on,
    wait_busy,
)
from tests.conftest import Stores

pytestmark = pytest.mark.chaos


def _flushdb(url: str) -> float:
    """FLUSHDB of the test's own db index: other sessions share this server. Never FLUSHALL."""
    client = redis.Redis.from_url(url)
    try:
        at = time.monotonic()
        client.flushdb()
        return at
    finally:
        client.close()


async def test_redis_flushed_mid_run_loses_nothing(shared_stores, tmp_path, figures):
    cluster = Cluster(shared_stores, tmp_path, workers=2)
    async with running(cluster):
        ids = await cluster.submit(300)
        await wait_busy(cluster, "worker-0")
        flushed_at = _flushdb(shared_stores.redis_url)
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
    events = await cluster.events(ids)
    runs = cluster.runs()
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert run_problems(cluster, runs) == []
    # Running jobs kept running; only entries waiting in the stream were lost, and they
    # were sent again: nothing ran twice.
    assert reruns(runs) == set()
    lost = {e["job_id"] for e in events if e["actor"] == "reaper"}
    assert lost, "the flush hit no waiting entry"
    assert rescued_by_reason(events) == {"queued→pending": len(lost)}
    figures(
        jobs=len(ids),
        entries_lost=len(lost),
        reruns=0,
        lost_done_after_seconds=round(max(jobs[j]["finished"] for j in lost) - flushed_at, 2),
    )


async def test_worker_killed_then_redis_flushed_every_job_completes(
    shared_stores, tmp_path, figures
):
    cluster = Cluster(shared_stores, tmp_path, workers=2)
    async with running(cluster):
        ids = await cluster.submit(300)
        await wait_busy(cluster, "worker-0")
        actor = cluster.actor("worker-0")
        killed_at, _ = cluster.kill("worker-0")
        await asyncio.sleep(0.5)
        _flushdb(shared_stores.redis_url)  # before the reaper could reclaim anything
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
    events = await cluster.events(ids)
    runs = cluster.runs()
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert run_problems(cluster, runs) == []
    in_flight = unfinished_on(events, actor)
    assert in_flight
    assert reruns(runs) <= in_flight
    figures(
        jobs=len(ids),
        in_flight_on_killed_worker=len(in_flight),
        reruns=len(reruns(runs)),
        reaper=rescued_by_reason(events),
        all_done_after_seconds=round(max(j["finished"] for j in jobs.values()) - killed_at, 2),
    )


async def test_redis_restart_is_survived_without_restarting_anything(
    stores, clean, private_redis, tmp_path, figures
):
    cluster = Cluster(Stores(stores.postgres_url, private_redis.url), tmp_path, workers=2)
    async with running(cluster):
        ids = await cluster.submit(300)
        await wait_busy(cluster, "worker-0")
        down_at = time.monotonic()
        private_redis.crash()
        readiness = await cluster.readiness()
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        private_redis.start()
        up_at = time.monotonic()
        probe, accepted_at = await cluster.submit_one()
        probe_done = (await cluster.jobs([probe]))[probe]["finished"]
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
        assert set((await cluster.readiness()).values()) == {200}
    assert set(readiness.values()) == {503}, readiness  # not ready while Redis was down
    events = await cluster.events(ids)
    runs = cluster.runs()
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert run_problems(cluster, runs) == []
    started_before = {job for job, rs in runs.items() if rs[0].start < up_at}
    assert reruns(runs) <= started_before
    figures(
        jobs=len(ids),
        reruns=len(reruns(runs)),
        reaper=rescued_by_reason(events),
        new_job_accepted_after_seconds=round(accepted_at - up_at, 2),
        new_job_done_after_seconds=round(probe_done - up_at, 2),
        all_done_after_seconds=round(max(j["finished"] for j in jobs.values()) - up_at, 2),
    )
