"""The deployables as separate processes against real servers, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.e2e.deployables import running_system, wait_finished

pytestmark = pytest.mark.e2e


async def test_hundreds_of_concurrent_submissions_all_complete(stores, clean, tmp_path):
    with running_system(stores, tmp_path, workers=2) as system:
        await system.ready()
        api = system.api_url
        async with aiohttp.ClientSession() as session:

            async def submit(i):
                async with session.post(
                    f"{api}/v1/jobs", json={"type": "ping", "payload": {"message": i}}
                ) as r:
                    assert r.status == 202
                    return (await r.json())["id"]

            ids = await asyncio.gather(*(submit(i) for i in range(300)))
            async with session.post(
                f"{api}/v1/jobs", json={"type": "fail", "max_attempts": 3}
            ) as r:
                fail_id = (await r.json())["id"]
            async with session.post(f"{api}/v1/jobs", json={"type": "dead"}) as r:
                dead_id = (await r.json())["id"]
            jobs = await wait_finished(session, api, [*ids, fail_id, dead_id])
        statuses = {jobs[i]["status"] for i in ids}
        bad = [jobs[i] for i in ids if jobs[i]["status"] != "completed"][:2]
        assert statuses == {"completed"}, bad
        assert [jobs[i]["result"]["message"] for i in ids] == list(range(300))
        assert (jobs[fail_id]["status"], jobs[fail_id]["attempts"]) == ("dead", 3)
        assert (jobs[dead_id]["status"], jobs[dead_id]["attempts"]) == ("dead", 1)
        # SIGTERM: each deployable stops cleanly.
        for name in list(system.procs):
            assert system.stop(name) == 0, system.procs[name].log.read_text()[-2000:]
        # Each froze its startup heap once up (resources.freeze_startup_heap).
        for name, deployable in system.procs.items():
            starts = [
                record
                for line in deployable.log.read_text().splitlines()
                if line.startswith("{")
                and (record := json.loads(line)).get("action") == "service.start"
            ]
            assert len(starts) == 1 and starts[0]["gc_frozen"] > 10_000, (name, starts)


async def test_sigterm_lets_a_running_job_finish_within_the_grace(stores, clean, tmp_path):
    env = {"TASKFORGE_SHUTDOWN_GRACE": "10s"}
    with running_system(stores, tmp_path, env=env) as system:
        await system.ready()
        api = system.api_url
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{api}/v1/jobs", json={"type": "sleep", "payload": {"seconds": 1.5}}
            ) as r:
                job_id = (await r.json())["id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with session.get(f"{api}/v1/jobs/{job_id}") as r:
                    if (await r.json())["status"] == "running":
                        break
                await asyncio.sleep(0.05)
            assert system.stop("worker-0") == 0
            async with session.get(f"{api}/v1/jobs/{job_id}") as r:
                job = await r.json()
        assert job["status"] == "completed" and job["attempts"] == 1
