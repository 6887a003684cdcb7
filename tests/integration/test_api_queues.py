"""Queues over the API: stats, pause holds jobs until resume, concurrency caps."""

from __future__ import annotations

import asyncio

from taskforge.scheduler.dispatcher import Dispatcher
from tests.integration.api_support import (
    api,
    api_settings,
    assert_error,
    get_json,
    post_json,
    wait_for_job,
)
from tests.integration.helpers import running_pipeline

__all__ = ["api"]


async def test_a_paused_queue_holds_its_jobs_and_runs_them_on_resume(
    api, pool, redis_client, stores
):
    settings = api_settings(stores, queues=("held", "free"))
    paused = await post_json(api, "/v1/queues/held/pause")
    assert paused["paused"] is True and paused["counts"]["pending"] == 0
    jobs = await post_json(
        api,
        "/v1/jobs/batch",
        {"jobs": [{"type": "ping", "queue": "held"} for _ in range(3)]},
        status=202,
    )
    other = await post_json(api, "/v1/jobs", {"type": "ping", "queue": "free"}, status=202)
    async with running_pipeline(pool, redis_client, settings):
        # Jobs of other queues flow; once one has, the dispatcher has had its chance.
        await wait_for_job(api, other["id"], lambda j: j["status"] == "completed")
        dispatcher = Dispatcher(pool, redis_client)
        assert await dispatcher.dispatch_once() == 0  # the paused queue's jobs stay put
        held = await get_json(api, "/v1/queues/held")
        assert held["counts"]["pending"] == 3 and held["backlog"] == 3
        resumed = await post_json(api, "/v1/queues/held/resume")
        assert resumed["paused"] is False
        for result in jobs["results"]:
            await wait_for_job(api, result["job_id"], lambda j: j["status"] == "completed")
    stats = await get_json(api, "/v1/queues/held")
    assert stats["counts"]["completed"] == 3 and stats["backlog"] == 0
    assert stats["throughput_per_minute"] == 3
    names = [q["name"] for q in (await get_json(api, "/v1/queues"))["queues"]]
    assert names == ["free", "held"]


async def test_unknown_and_invalid_queues(api):
    assert_error(await get_json(api, "/v1/queues/nothing-here", status=404), "queue_not_found")
    response = await api.post("/v1/queues/-bad-/pause")
    assert response.status == 422
    patch = await api.patch("/v1/queues/q", json={"concurrency": 0})
    assert patch.status == 422
    assert_error(await patch.json(), "validation_error")


async def test_a_concurrency_cap_holds_across_workers(api, pool, redis_client, stores):
    capped = await api.patch("/v1/queues/narrow", json={"concurrency": 2})
    assert capped.status == 200 and (await capped.json())["concurrency"] == 2
    settings = api_settings(stores, worker_concurrency=4, queues=("narrow",))
    made = await post_json(
        api,
        "/v1/jobs/batch",
        {
            "jobs": [
                {"type": "sleep", "queue": "narrow", "payload": {"seconds": 0.3}} for _ in range(6)
            ]
        },
        status=202,
    )
    ids = [r["job_id"] for r in made["results"]]
    async with running_pipeline(pool, redis_client, settings, workers=2):
        done = [
            await wait_for_job(api, i, lambda j: j["status"] == "completed", timeout=60)
            for i in ids
        ]
    # The next job is dispatched only after a finish commits, so intervals never overlap
    # more than the cap: check with the recorded start and finish times.
    edges = sorted(
        [(j["started_at"], 1) for j in done] + [(j["finished_at"], -1) for j in done],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    uncapped = await api.patch("/v1/queues/narrow", json={"concurrency": None})
    assert (await uncapped.json())["concurrency"] is None
    await asyncio.sleep(0)
