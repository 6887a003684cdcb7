"""POST /v1/jobs and GET /v1/jobs/{id}: status codes, idempotency, validation, error shape."""

from __future__ import annotations

import uuid

import pytest

from taskforge.api.app import create_app
from tests.conftest import make_settings


@pytest.fixture
async def client(aiohttp_client, stores, clean):
    app = create_app(make_settings(stores, max_body_bytes=4096))
    return await aiohttp_client(app)


def assert_error_shape(body, code=None):
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


async def test_submit_returns_202_with_the_pending_job(client):
    response = await client.post("/v1/jobs", json={"type": "ping", "payload": {"message": "x"}})
    assert response.status == 202
    job = await response.json()
    assert job["status"] == "pending" and job["type"] == "ping" and job["queue"] == "default"
    assert job["max_attempts"] == 5 and job["timeout_seconds"] == 300
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    fetched = await client.get(f"/v1/jobs/{job['id']}")
    assert fetched.status == 200
    assert (await fetched.json())["id"] == job["id"]


async def test_idempotency_key_202_then_200_then_422(client):
    body = {"type": "ping", "payload": {"a": 1, "b": 2}}
    first = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-1"})
    assert first.status == 202
    # Same body with keys in another order is the same request.
    second = await client.post(
        "/v1/jobs",
        data='{"payload": {"b": 2, "a": 1}, "type": "ping"}',
        headers={"Idempotency-Key": "order-1"},
    )
    assert second.status == 200
    assert (await second.json())["id"] == (await first.json())["id"]
    third = await client.post(
        "/v1/jobs",
        json={"type": "ping", "payload": {"a": 9}},
        headers={"Idempotency-Key": "order-1"},
    )
    assert third.status == 422
    assert_error_shape(await third.json(), "idempotency_key_reused")


async def test_concurrent_submits_with_one_key_make_one_job(client):
    import asyncio

    body = {"type": "ping"}
    responses = await asyncio.gather(
        *(
            client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same"})
            for _ in range(10)
        )
    )
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert sorted(r.status for r in responses) == [200] * 9 + [202]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 422, "validation_error"),
        (b'{"payload": {}}', 422, "validation_error"),
        (b'{"type": 5}', 422, "validation_error"),
        (b'{"type": "ping", "payload": "text"}', 422, "validation_error"),
        (b'{"type": "ping", "priority": 1.5}', 422, "validation_error"),
        (b'{"type": "ping", "priority": true}', 422, "validation_error"),
        (b'{"type": "ping", "max_attempts": 0}', 422, "validation_error"),
        (b'{"type": "ping", "max_attempts": -3}', 422, "validation_error"),
        (b'{"type": "ping", "timeout_seconds": -1}', 422, "validation_error"),
        (b'{"type": "ping", "delay_seconds": -5}', 422, "validation_error"),
        (b'{"type": "ping", "run_at": "tomorrow"}', 422, "validation_error"),
        (b'{"type": "ping", "run_at": "2030-01-01T00:00:00"}', 422, "validation_error"),
        (
            b'{"type": "ping", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}',
            422,
            "validation_error",
        ),
        (b'{"type": "ping", "queue": "no spaces"}', 422, "validation_error"),
        (b'{"type": "ping", "colour": "red"}', 422, "validation_error"),
    ],
)
async def test_bad_input_gets_the_error_shape_never_a_500(client, raw, status, code):
    response = await client.post("/v1/jobs", data=raw)
    assert response.status == status
    assert_error_shape(await response.json(), code)


async def test_validation_details_name_each_field(client):
    response = await client.post("/v1/jobs", json={"priority": "high", "payload": 3})
    body = await response.json()
    fields = {d["field"] for d in body["error"]["details"]}
    assert {"type", "priority", "payload"} <= fields


async def test_oversized_body_is_413(client):
    response = await client.post("/v1/jobs", json={"type": "ping", "payload": {"x": "y" * 10000}})
    assert response.status == 413
    body = await response.json()
    assert_error_shape(body, "payload_too_large")
    assert "TASKFORGE_MAX_BODY_BYTES" in body["error"]["message"]


async def test_unknown_job_and_bad_id_are_404(client):
    missing = await client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert missing.status == 404
    assert_error_shape(await missing.json(), "job_not_found")
    bad = await client.get("/v1/jobs/not-a-uuid")
    assert bad.status == 404


async def test_unknown_route_and_method_get_json_errors(client):
    assert_error_shape(await (await client.get("/v1/nothing")).json(), "not_found")
    response = await client.delete("/v1/jobs")
    assert response.status == 405
    assert_error_shape(await response.json(), "method_not_allowed")


async def test_request_id_is_echoed_or_generated(client):
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = await client.post("/v1/jobs", data=b"{")
    another = await client.post("/v1/jobs", data=b"{")
    ids = [r.headers["X-Request-ID"] for r in (generated, another)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0] != ids[1]


async def test_readyz_checks_both_stores(client):
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_delay_sets_run_at_in_the_future(client):
    response = await client.post("/v1/jobs", json={"type": "ping", "delay_seconds": 60})
    job = await response.json()
    assert job["run_at"] > job["created_at"]


async def test_api_never_writes_to_a_job_stream(client, redis_client):
    for _ in range(5):
        assert (await client.post("/v1/jobs", json={"type": "ping"})).status == 202
    keys = [k async for k in redis_client.scan_iter(match="taskforge:*:jobs")]
    assert keys == []
