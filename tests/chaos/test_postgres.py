"""A crash and restart of a private PostgreSQL under the running deployables: none exits,
each reports not ready while it is down, and new jobs are accepted and complete again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.conftest import running
from tests.chaos.harness import Cluster, reruns, rescued_by_reason, run_problems, wait_busy
from tests.conftest import Stores

pytestmark = pytest.mark.chaos


async def test_postgres_restart_is_survived_without_restarting_anything(
    stores, clean, private_postgres, tmp_path, figures
):
    cluster = Cluster(Stores(private_postgres.url, stores.redis_url), tmp_path, workers=2)
    async with running(cluster):
        ids = await cluster.submit(300)
        await wait_busy(cluster, "worker-0")
        down_at = time.monotonic()
        await asyncio.to_thread(private_postgres.crash)
        readiness = await cluster.readiness()
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        await asyncio.to_thread(private_postgres.start)
        up_at = time.monotonic()
        probe, accepted_at = await cluster.submit_one()
        probe_done = (await cluster.jobs([probe]))[probe]["finished"]
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
        assert set((await cluster.readiness()).values()) == {200}
    assert set(readiness.values()) == {503}, readiness  # not ready while PostgreSQL was down
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
