"""The dead-letter queue over the API: listed, inspected, replayed (one and by filter)."""

from __future__ import annotations

from tests.integration.api_support import (
    api,
    assert_error,
    get_json,
    post_json,
    wait_for_job,
)
from tests.integration.helpers import running_pipeline

__all__ = ["api"]


async def test_a_dead_job_is_listed_in_the_dlq_and_replayed(api, pool, redis_client, settings):
    job = await post_json(api, "/v1/jobs", {"type": "dead"}, status=202)
    alive = await post_json(api, "/v1/jobs", {"type": "ping"}, status=202)
    async with running_pipeline(pool, redis_client, settings):
        await wait_for_job(api, job["id"], lambda j: j["status"] == "dead")
        await wait_for_job(api, alive["id"], lambda j: j["status"] == "completed")
        listed = await get_json(api, "/v1/dlq?queue=default&type=dead")
        assert [j["id"] for j in listed["jobs"]] == [job["id"]]
        assert listed["next_cursor"] is None
        dead = await get_json(api, f"/v1/dlq/{job['id']}")
        assert dead["status"] == "dead" and "Fail" in dead["last_error"]
        assert_error(await get_json(api, f"/v1/dlq/{alive['id']}", status=404), "job_not_found")
        conflict = await api.post(f"/v1/dlq/{alive['id']}/replay")
        assert conflict.status == 409
        assert_error(await conflict.json(), "job_not_dead")

        replayed = await post_json(api, f"/v1/dlq/{job['id']}/replay")
        assert replayed["status"] == "pending" and replayed["attempts"] == 0
        # The "dead" type fails terminally again: it runs once more and returns to the DLQ.
        again = await wait_for_job(
            api, job["id"], lambda j: j["status"] == "dead" and j["started_at"] is not None
        )
    assert again["attempts"] == 1
    events = (await get_json(api, f"/v1/jobs/{job['id']}/events"))["events"]
    transitions = [(e["from_status"], e["to_status"]) for e in events]
    assert transitions.count(("running", "dead")) == 2
    replay = events[transitions.index(("dead", "pending"))]
    assert replay["actor"] == "api" and replay["error"] == "replayed from the DLQ"


async def test_replay_by_filter_counts_with_dry_run_then_replays(api, pool):
    made = await post_json(
        api,
        "/v1/jobs/batch",
        {
            "jobs": [
                {"type": "report", "queue": "q1", "delay_seconds": 600},
                {"type": "report", "queue": "q2", "delay_seconds": 600},
                {"type": "other", "queue": "q1", "delay_seconds": 600},
            ]
        },
        status=202,
    )
    ids = [r["job_id"] for r in made["results"]]
    reasons = ["SMTP timeout", "smtp refused", "disk full"]
    for job_id, reason in zip(ids, reasons, strict=True):
        await post_json(api, f"/v1/jobs/{job_id}/dlq", {"reason": reason})
    dry = await post_json(api, "/v1/dlq/replay", {"error": "SMTP", "dry_run": True})
    assert dry == {"dry_run": True, "matched": 2, "replayed": 0}
    assert len((await get_json(api, "/v1/dlq"))["jobs"]) == 3
    only_q1 = await post_json(api, "/v1/dlq/replay", {"type": "report", "queue": "q1"})
    assert only_q1 == {"dry_run": False, "matched": 1, "replayed": 1}
    assert (await get_json(api, f"/v1/jobs/{ids[0]}"))["status"] == "pending"
    future = await post_json(api, "/v1/dlq/replay", {"died_after": "2999-01-01T00:00:00Z"})
    assert future["replayed"] == 0
    rest = await post_json(api, "/v1/dlq/replay")
    assert rest["replayed"] == 2
    assert (await get_json(api, "/v1/dlq"))["jobs"] == []
    bad = await api.post("/v1/dlq/replay", json={"dry_run": "yes", "color": "red"})
    assert bad.status == 422
    fields = {p["field"] for p in (await bad.json())["error"]["details"]}
    assert fields == {"dry_run", "color"}


async def test_a_waiting_job_moves_to_the_dlq_with_its_reason(api, redis_client):
    job = await post_json(api, "/v1/jobs", {"type": "ping", "delay_seconds": 600}, status=202)
    moved = await post_json(api, f"/v1/jobs/{job['id']}/dlq", {"reason": "poison payload"})
    assert moved["status"] == "dead" and moved["last_error"] == "poison payload"
    events = (await get_json(api, f"/v1/jobs/{job['id']}/events"))["events"]
    assert (events[-1]["from_status"], events[-1]["to_status"], events[-1]["error"]) == (
        "pending",
        "dead",
        "poison payload",
    )
    assert await redis_client.xlen("taskforge:dlq") == 1
    again = await api.post(f"/v1/jobs/{job['id']}/dlq")
    assert again.status == 409
    assert_error(await again.json(), "job_not_movable")
    bad = await api.post(f"/v1/jobs/{job['id']}/dlq", json={"reason": 7})
    assert bad.status == 422
