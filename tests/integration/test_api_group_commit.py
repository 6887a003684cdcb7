"""Group commit of single submits: concurrent POST /v1/jobs share INSERTs, each request still
gets its own job, trace context and idempotency outcome, and a failed insert fails them all."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from taskforge import metrics
from taskforge.api.app import create_app
from taskforge.api.submitter import Submitter
from tests.conftest import make_settings
from tests.integration.helpers import job_values


@pytest.fixture
async def client(aiohttp_client, stores, clean):
    return await aiohttp_client(create_app(make_settings(stores)))


def _batches() -> tuple[float, float]:
    """(inserts so far, jobs they carried) from the submit batch-size histogram."""
    count = total = 0.0
    for sample in metrics.SUBMIT_BATCH_SIZE.collect()[0].samples:
        if sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            total = sample.value
    return count, total


async def test_concurrent_submits_share_inserts_and_keep_their_own_trace(client, stores):
    inserts_before, jobs_before = _batches()
    traces = [f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for _ in range(200)]
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/jobs", json={"type": "ping", "payload": {"i": i}}, headers={"traceparent": tp}
            )
            for i, tp in enumerate(traces)
        )
    )
    assert [r.status for r in responses] == [202] * 200
    jobs = [await r.json() for r in responses]
    assert len({job["id"] for job in jobs}) == 200
    inserts, carried = _batches()
    assert carried - jobs_before == 200
    assert inserts - inserts_before < 200, "no two requests shared an INSERT"
    conn = await asyncpg.connect(stores.postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, payload->>'i' AS i, traceparent,"
            " (SELECT count(*) FROM job_events e WHERE e.job_id = j.id) AS events FROM jobs j"
        )
    finally:
        await conn.close()
    by_id = {row["id"]: row for row in rows}
    for i, job in enumerate(jobs):
        row = by_id[job["id"]]
        assert row["i"] == str(i), "a response named another request's job"
        assert row["traceparent"] == traces[i]
        assert row["events"] == 1


async def test_one_key_in_one_batch_creates_once_and_flags_a_different_body(client):
    same = {"type": "ping", "payload": {"v": 1}}
    other = {"type": "ping", "payload": {"v": 2}}
    bodies = [same] * 6 + [other] * 3
    responses = await asyncio.gather(
        *(client.post("/v1/jobs", json=b, headers={"Idempotency-Key": "k-1"}) for b in bodies)
    )
    statuses = [r.status for r in responses]
    assert statuses.count(202) == 1
    winner = bodies[statuses.index(202)]
    for body, status in zip(bodies, statuses, strict=True):
        if status != 202:
            assert status == (200 if body == winner else 422)
    ids = {(await r.json()).get("id") for r, s in zip(responses, statuses, strict=True) if s != 422}
    assert len(ids) == 1


async def test_a_failed_insert_fails_every_request_it_carried(stores, clean):
    pool = await asyncpg.create_pool(stores.postgres_url, min_size=1, max_size=2)
    submitter = Submitter(pool)
    stored = await submitter.submit(job_values(), None)
    assert stored.created
    await pool.close()
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(submitter.submit(job_values(), None) for _ in range(20)), return_exceptions=True
        ),
        timeout=10,
    )
    assert all(isinstance(o, asyncpg.InterfaceError) for o in outcomes), outcomes
    await submitter.drain()


async def test_a_cancelled_flush_leaves_no_request_waiting(stores, clean):
    pool = await asyncpg.create_pool(stores.postgres_url, min_size=1, max_size=1)
    try:
        submitter = Submitter(pool)
        async with pool.acquire():  # the flusher now waits for the only connection
            waiting = [asyncio.create_task(submitter.submit(job_values(), None)) for _ in range(5)]
            await asyncio.sleep(0.05)
            for task in list(submitter._tasks):
                task.cancel()
            outcomes = await asyncio.wait_for(
                asyncio.gather(*waiting, return_exceptions=True), timeout=5
            )
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    finally:
        await pool.close()


async def test_requests_that_arrive_during_an_insert_all_go_in_the_next(stores, clean):
    """One insert at a time: what arrives while it runs waits and shares one insert, so the
    batches grow with the load (PostgreSQL's commit and flush paid once for all of them)."""
    pool = await asyncpg.create_pool(stores.postgres_url, min_size=2, max_size=4)
    try:
        submitter = Submitter(pool)
        async with pool.acquire() as blocker, blocker.transaction():
            # Inserts wait behind this lock: the first request's insert is now in flight.
            await blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
            first = asyncio.create_task(submitter.submit(job_values(), None))
            await asyncio.sleep(0.1)
            later = []
            for _ in range(9):  # one by one, each in time to start an insert of its own
                later.append(asyncio.create_task(submitter.submit(job_values(), None)))
                await asyncio.sleep(0.02)
            assert not first.done() and not any(task.done() for task in later)
        outcomes = await asyncio.wait_for(asyncio.gather(first, *later), timeout=10)
        await submitter.drain()
        assert all(outcome.created for outcome in outcomes)
        async with pool.acquire() as conn:
            # Rows of one INSERT share its transaction's created_at.
            inserts = await conn.fetch(
                "SELECT created_at, count(*) AS jobs FROM jobs GROUP BY 1 ORDER BY 1"
            )
        assert [row["jobs"] for row in inserts] == [1, 9]
    finally:
        await pool.close()
