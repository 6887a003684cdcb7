"""Operator endpoints on jobs: auth, batch, listing with cursors, history, cancel, retry."""

from __future__ import annotations

import hashlib

from taskforge.api.app import create_app
from taskforge.config import parse_tokens
from tests.integration.api_support import (
    AUTH,
    TOKEN,
    api,
    api_settings,
    assert_error,
    get_json,
    post_json,
    wait_for_job,
)
from tests.integration.helpers import running_pipeline

__all__ = ["api"]  # the fixture, imported for pytest


async def test_without_a_token_401_and_probes_stay_open(aiohttp_client, stores, clean):
    client = await aiohttp_client(create_app(api_settings(stores)))
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/queues"),
        ("GET", "/v1/nowhere"),
    ]:
        response = await client.request(method, path, json={"type": "ping"})
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(await response.json(), "unauthorized")
    wrong = await client.get("/v1/jobs", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 401
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/v1/jobs", headers=AUTH)).status == 200


async def test_rotated_tokens_both_work_and_the_sha256_form_is_accepted(
    aiohttp_client, stores, clean
):
    digest = hashlib.sha256(b"old-token").hexdigest()
    tokens = parse_tokens(f"sha256:{digest},{TOKEN}")
    client = await aiohttp_client(create_app(api_settings(stores, api_tokens=tokens)))
    for token in ("old-token", TOKEN):
        response = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200


async def test_rate_limit_answers_429_with_retry_after(aiohttp_client, stores, clean):
    client = await aiohttp_client(create_app(api_settings(stores, rate_limit=2.0)), headers=AUTH)
    statuses = [(await client.get("/v1/queues")).status for _ in range(6)]
    assert statuses[:2] == [200, 200] and 429 in statuses
    limited = await client.get("/v1/queues")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert_error(await limited.json(), "rate_limited")
    assert (await client.get("/healthz")).status == 200


async def test_a_batch_of_120_is_listed_completely_through_cursors(api):
    jobs = [{"type": "ping", "payload": {"n": n}, "delay_seconds": 3600} for n in range(120)]
    created = await post_json(api, "/v1/jobs/batch", {"jobs": jobs}, status=202)
    assert created["created"] == 120 and created["existing"] == created["conflict"] == 0
    ids = [r["job_id"] for r in created["results"]]
    assert [r["index"] for r in created["results"]] == list(range(120))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=50" + (f"&cursor={cursor}" if cursor else "")
        page = await get_json(api, f"/v1/jobs?{query}")
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == set(ids)
    # Newest first: ids are time-ordered UUIDv7 and the batch shares one created_at.
    assert seen == sorted(seen, reverse=True)


async def test_batch_reports_created_existing_and_conflict_per_job(api):
    first = await post_json(
        api,
        "/v1/jobs/batch",
        {
            "jobs": [
                {"type": "ping", "idempotency_key": "k1", "delay_seconds": 600},
                {
                    "type": "ping",
                    "idempotency_key": "k2",
                    "payload": {"a": 1},
                    "delay_seconds": 600,
                },
            ]
        },
        status=202,
    )
    assert [r["result"] for r in first["results"]] == ["created", "created"]
    again = await post_json(
        api,
        "/v1/jobs/batch",
        {
            "jobs": [
                {"type": "ping", "idempotency_key": "k1", "delay_seconds": 600},
                {
                    "type": "ping",
                    "idempotency_key": "k2",
                    "payload": {"a": 2},
                    "delay_seconds": 600,
                },
                {"type": "ping", "idempotency_key": "k3", "delay_seconds": 600},
                {"type": "ping", "idempotency_key": "k3", "delay_seconds": 600},
            ]
        },
        status=202,
    )
    results = again["results"]
    assert [r["result"] for r in results] == ["existing", "conflict", "created", "existing"]
    assert results[0]["job_id"] == first["results"][0]["job_id"]
    assert_error({"error": results[1]["error"]}, "idempotency_key_reused")
    assert results[2]["job_id"] == results[3]["job_id"]
    assert (again["created"], again["existing"], again["conflict"]) == (1, 2, 1)
    # The same key through the single submit endpoint finds the batch's job.
    single = await api.post(
        "/v1/jobs", json={"type": "ping", "delay_seconds": 600}, headers={"Idempotency-Key": "k1"}
    )
    assert single.status == 200 and (await single.json())["id"] == results[0]["job_id"]


async def test_batch_with_an_invalid_job_stores_nothing(api):
    response = await api.post(
        "/v1/jobs/batch", json={"jobs": [{"type": "ping"}, {"type": "ping", "priority": 1000}]}
    )
    assert response.status == 422
    body = await response.json()
    assert_error(body, "validation_error")
    assert body["error"]["details"][0]["index"] == 1
    assert (await get_json(api, "/v1/jobs"))["jobs"] == []
    # A trailing newline is not part of a valid name (a regex $ would let it through).
    for job in ({"type": "ping\n"}, {"type": "ping", "queue": "q\n"}):
        assert (await api.post("/v1/jobs", json=job)).status == 422, job
    too_many = await api.post("/v1/jobs/batch", json={"jobs": [{"type": "ping"}] * 1001})
    assert too_many.status in (413, 422)


async def test_listing_filters_by_status_queue_and_type(api):
    await post_json(
        api,
        "/v1/jobs/batch",
        {
            "jobs": [
                {"type": "ping", "queue": "a", "delay_seconds": 600},
                {"type": "sleep", "queue": "a", "delay_seconds": 600},
                {"type": "ping", "queue": "b", "delay_seconds": 600},
            ]
        },
        status=202,
    )
    assert len((await get_json(api, "/v1/jobs?queue=a"))["jobs"]) == 2
    assert len((await get_json(api, "/v1/jobs?queue=a&type=ping"))["jobs"]) == 1
    assert len((await get_json(api, "/v1/jobs?status=pending,queued"))["jobs"]) == 3
    assert (await get_json(api, "/v1/jobs?status=dead"))["jobs"] == []
    future = (await get_json(api, "/v1/jobs?created_after=2999-01-01T00:00:00Z"))["jobs"]
    assert future == []
    for query, field in [
        ("status=nope", "status"),
        ("limit=0", "limit"),
        ("cursor=garbage", "cursor"),
        ("created_after=yesterday", "created_after"),
    ]:
        body = await get_json(api, f"/v1/jobs?{query}", status=400)
        assert_error(body, "invalid_parameter")
        assert body["error"]["details"][0]["field"] == field


async def test_a_delayed_job_is_cancelled_at_once(api):
    job = await post_json(api, "/v1/jobs", {"type": "ping", "delay_seconds": 3600}, status=202)
    cancelled = await post_json(api, f"/v1/jobs/{job['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    events = (await get_json(api, f"/v1/jobs/{job['id']}/events"))["events"]
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in events] == [
        (None, "pending", "api"),
        ("pending", "cancelled", "api"),
    ]
    again = await api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status == 409
    assert_error(await again.json(), "job_not_cancellable")
    missing = await api.post("/v1/jobs/0190f0f0-0000-7000-8000-000000000000/cancel")
    assert missing.status == 404


async def test_a_running_60s_job_is_cancelled_within_seconds_with_history(
    api, pool, redis_client, stores
):
    # A heartbeat far away: only the pushed signal can cancel the job quickly.
    settings = api_settings(stores, visibility_timeout=300.0)
    job = await post_json(
        api, "/v1/jobs", {"type": "sleep", "payload": {"seconds": 60}}, status=202
    )
    async with running_pipeline(pool, redis_client, settings):
        await wait_for_job(api, job["id"], lambda j: j["status"] == "running")
        response = await api.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status == 202
        assert (await response.json())["cancel_requested"] is True
        # Far below the 60 s sleep and the 100 s heartbeat: the push did it.
        done = await wait_for_job(
            api, job["id"], lambda j: j["status"] == "cancelled", timeout=20.0
        )
    assert done["attempts"] == 1 and done["finished_at"] is not None
    events = (await get_json(api, f"/v1/jobs/{job['id']}/events"))["events"]
    transitions = [(e["from_status"], e["to_status"]) for e in events]
    assert transitions == [
        (None, "pending"),
        ("pending", "queued"),
        ("queued", "running"),
        ("running", "running"),
        ("running", "cancelled"),
    ]
    assert events[3]["actor"] == "api" and events[3]["error"] == "cancel requested"
    assert events[4]["actor"].startswith("worker:")


async def test_retry_runs_a_finished_job_again(api, pool, redis_client, settings):
    job = await post_json(
        api, "/v1/jobs", {"type": "ping", "payload": {"message": "hi"}}, status=202
    )
    early = await api.post(f"/v1/jobs/{job['id']}/retry")
    assert early.status == 409
    assert_error(await early.json(), "job_not_retryable")
    async with running_pipeline(pool, redis_client, settings):
        await wait_for_job(api, job["id"], lambda j: j["status"] == "completed")
        retried = await post_json(api, f"/v1/jobs/{job['id']}/retry")
        assert retried["status"] == "pending" and retried["attempts"] == 0
        assert retried["result"] is None
        done = await wait_for_job(api, job["id"], lambda j: j["status"] == "completed")
    assert done["attempts"] == 1 and done["result"] == {"message": "hi"}
    events = (await get_json(api, f"/v1/jobs/{job['id']}/events"))["events"]
    assert [e["to_status"] for e in events].count("completed") == 2
    assert ("completed", "pending", "retried on request") in [
        (e["from_status"], e["to_status"], e["error"]) for e in events
    ]


async def test_tokens_never_reach_the_logs(aiohttp_client, stores, clean, caplog):
    caplog.set_level("DEBUG")
    client = await aiohttp_client(create_app(api_settings(stores)))
    await client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-secret-token"})
    await client.get("/v1/jobs", headers=AUTH)
    await client.post("/v1/jobs", data=b"{not json", headers=AUTH)
    assert TOKEN not in caplog.text and "wrong-secret-token" not in caplog.text
