"""A crash and restart of a private PostgreSQL under the running deployables: none exits,
each reports not ready while it is down, and new jobs are accepted and complete again.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from taskforge.scheduler.dispatcher import listen
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
        async with aiohttp.ClientSession() as session:
            body = {"type": "chaos.work", "queue": "probe"}
            async with session.post(f"{cluster.api}/v1/jobs", json=body) as r:
                refused = (r.status, (await r.json())["error"]["code"], r.headers["Retry-After"])
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        await asyncio.to_thread(private_postgres.start)
        up_at = time.monotonic()
        probe, accepted_at = await cluster.submit_one()
        probe_done = (await cluster.jobs([probe]))[probe]["finished"]
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
        assert set((await cluster.readiness()).values()) == {200}
    assert set(readiness.values()) == {503}, readiness  # not ready while PostgreSQL was down
    assert refused == (503, "store_unavailable", "1")  # retry later, not a server bug
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


async def test_dispatcher_listen_connection_comes_back_after_a_restart(private_postgres):
    """The scheduler's LISTEN connection reconnects by itself and wakes the dispatcher."""

    class Dispatcher:
        def __init__(self) -> None:
            self.wake = asyncio.Event()

        def notified(self, *_: object) -> None:
            self.wake.set()

    async def notify() -> None:
        conn = await asyncpg.connect(private_postgres.url)
        try:
            await conn.execute("NOTIFY taskforge_jobs")
        finally:
            await conn.close()

    dispatcher, stop = Dispatcher(), asyncio.Event()
    listener = asyncio.create_task(listen(private_postgres.url, dispatcher, stop))
    try:
        await asyncio.to_thread(private_postgres.crash)
        await asyncio.to_thread(private_postgres.start)
        # The reconnect wakes the dispatcher once (for what it missed); then it must hear
        # notifications again.
        for _ in range(2):
            dispatcher.wake.clear()
            deadline = time.monotonic() + 30
            while not dispatcher.wake.is_set():
                assert time.monotonic() < deadline, "LISTEN never reconnected"
                await notify()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(listener, 30)
