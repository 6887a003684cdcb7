"""Submits: `Prefer: return=minimal` (ids only, the same jobs stored); U+0000 refused; run_at
with any offset Python reads."""

from __future__ import annotations

from tests.integration.api_support import api, assert_error, get_json

__all__ = ["api"]  # the fixture, imported for pytest

MINIMAL = {"Prefer": "return=minimal"}


async def test_a_minimal_batch_answers_ids_and_stores_the_jobs(api):
    jobs = [
        {"type": "ping", "payload": {"n": 1}, "idempotency_key": "m1", "delay_seconds": 600},
        {"type": "ping", "queue": "other", "delay_seconds": 600},
    ]
    response = await api.post("/v1/jobs/batch", json={"jobs": jobs}, headers=MINIMAL)
    body = await response.json()
    assert response.status == 202, body
    assert response.headers["Preference-Applied"] == "return=minimal"
    assert (body["created"], body["existing"], body["conflict"]) == (2, 0, 0)
    assert [set(r) for r in body["results"]] == [{"index", "result", "job_id"}] * 2
    stored = [await get_json(api, f"/v1/jobs/{r['job_id']}") for r in body["results"]]
    assert [(j["queue"], j["payload"], j["status"]) for j in stored] == [
        ("default", {"n": 1}, "pending"),
        ("other", {}, "pending"),
    ]
    # Existing and conflicting keys: still named per job, a conflict still with its error.
    again = await api.post(
        "/v1/jobs/batch",
        json={"jobs": [jobs[0], {**jobs[0], "payload": {"n": 2}}]},
        headers={"Prefer": "wait=1, return=minimal"},
    )
    results = (await again.json())["results"]
    assert again.status == 200
    assert [r["result"] for r in results] == ["existing", "conflict"]
    assert results[0] == {"index": 0, "result": "existing", "job_id": stored[0]["id"]}
    assert_error({"error": results[1]["error"]}, "idempotency_key_reused")
    assert "job" not in results[1]


async def test_without_the_preference_the_batch_answers_documents(api):
    for headers in ({}, {"Prefer": "return=representation"}):
        response = await api.post(
            "/v1/jobs/batch",
            json={"jobs": [{"type": "ping", "delay_seconds": 600}]},
            headers=headers,
        )
        result = (await response.json())["results"][0]
        assert "Preference-Applied" not in response.headers
        assert result["job"]["id"] == result["job_id"] and result["job"]["status"] == "pending"


async def test_a_minimal_single_submit_answers_its_id(api):
    job = {"type": "ping", "delay_seconds": 600}
    headers = {**MINIMAL, "Idempotency-Key": "s1"}
    created = await api.post("/v1/jobs", json=job, headers=headers)
    body = await created.json()
    assert created.status == 202 and set(body) == {"id"}
    assert created.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert created.headers["Preference-Applied"] == "return=minimal"
    assert (await get_json(api, f"/v1/jobs/{body['id']}"))["status"] == "pending"
    repeated = await api.post("/v1/jobs", json=job, headers=headers)
    assert repeated.status == 200 and await repeated.json() == body
    conflict = await api.post("/v1/jobs", json={**job, "payload": {"x": 1}}, headers=headers)
    assert conflict.status == 422
    assert_error(await conflict.json(), "idempotency_key_reused")
    full = await api.post("/v1/jobs", json=job)
    assert (await full.json())["status"] == "pending"


async def test_a_nul_anywhere_in_a_payload_is_refused_and_lookalikes_are_not(api):
    for payload in ({"a": "x\u0000"}, {"k\u0000": 1}, {"a": [{"b": ["\u0000"]}]}):
        single = await api.post("/v1/jobs", json={"type": "ping", "payload": payload})
        assert single.status == 422, payload
        assert (await single.json())["error"]["details"][0]["field"] == "payload"
        batch = await api.post(
            "/v1/jobs/batch",
            json={"jobs": [{"type": "ping"}, {"type": "ping", "payload": payload}]},
        )
        assert batch.status == 422, payload
        assert (await batch.json())["error"]["details"][0]["index"] == 1
    assert (await get_json(api, "/v1/jobs"))["jobs"] == []
    # The text of the escape, not the character: stored as sent.
    lookalike = {"path": "C:\\u0000"}
    response = await api.post(
        "/v1/jobs", json={"type": "ping", "payload": lookalike, "delay_seconds": 600}
    )
    assert response.status == 202 and (await response.json())["payload"] == lookalike


async def test_run_at_with_any_offset_python_reads_is_stored_as_its_instant(api):
    # PostgreSQL refuses offsets beyond ±15:59; this one is the same instant in UTC.
    far_east = "2026-01-01T22:51:00+22:51"
    single = await api.post("/v1/jobs", json={"type": "ping", "run_at": far_east})
    assert single.status == 202, await single.text()
    assert (await single.json())["run_at"].startswith("2026-01-01T00:00:00")
    batch = await api.post(
        "/v1/jobs/batch", json={"jobs": [{"type": "ping", "run_at": "0342-07-01T14:08:13+22:51"}]}
    )
    assert batch.status == 202, await batch.text()
    assert (await batch.json())["results"][0]["job"]["run_at"].startswith("0342-06-30T15:17:13")
    early = await api.post("/v1/jobs", json={"type": "ping", "run_at": "0001-01-01T00:00:00+05:00"})
    assert early.status == 422
    assert (await early.json())["error"]["details"][0]["field"] == "run_at"
