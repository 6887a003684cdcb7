"""A cancel requested of a running job holds when its worker dies or shuts down first.

``POST /v1/jobs/{id}/cancel`` flags a running job and leaves it to its worker. If that worker
dies (the reaper rescues the lapsed lease) or shuts down past its grace (it hands the job
back), the job ends ``cancelled``: sent to ``retrying`` or ``pending`` it ran again.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from taskforge import lifecycle, streams
from taskforge.jobs import Job, Status
from taskforge.lifecycle import HANDED_BACK_CANCELLED, RescuePolicy
from taskforge.reaper.reclaim import Reclaimer
from taskforge.scheduler.dispatcher import Dispatcher
from taskforge.worker.registry import load
from tests.conftest import make_settings
from tests.integration.helpers import job_history, running_pipeline, submit

VT = 0.3  # visibility timeout and lease of the reaper's tests, seconds
POLICY = RescuePolicy(max_deliveries=5, backoff_base=1.0, backoff_max=60.0)


async def _claimed_and_cancelled(pool, redis, **job) -> tuple[Job, str]:
    """A job claimed by a worker that then dies (it never renews), and whose cancel the api
    recorded while it ran; the job and its stream id."""
    submitted = await submit(pool, "ping", **job)
    await Dispatcher(pool, redis, batch_size=10).dispatch_once()
    [(_, stream_id, data)] = await streams.read(redis, ["default"], "ghost", 10, block_ms=10)
    async with pool.acquire() as conn:
        envelope = streams.decode(stream_id, data)
        assert len(await lifecycle.claim(conn, [(envelope.job_id, stream_id)], "worker:ghost", VT))
        cancelled = await lifecycle.cancel(conn, submitted.id, "api")
    assert cancelled is not None and cancelled.status is Status.RUNNING
    return submitted, stream_id


def _reclaimed(reason: str) -> float:
    labels = {"queue": "default", "reason": reason}
    return REGISTRY.get_sample_value("taskforge_jobs_reclaimed_total", labels) or 0.0


@pytest.mark.parametrize("max_attempts", [1, 5], ids=["last-attempt", "attempts-left"])
async def test_a_cancel_requested_job_whose_worker_died_ends_cancelled(
    pool, redis_client, stores, max_attempts
):
    """Not retried (attempts left) nor dead with a DLQ notice (none left): cancelled, its
    entry acked, counted under reason ``cancelled``."""
    job, _ = await _claimed_and_cancelled(pool, redis_client, max_attempts=max_attempts)
    counted = _reclaimed("cancelled")
    settings = make_settings(stores, visibility_timeout=VT)
    reclaimer = Reclaimer(pool, redis_client, settings, name="reaper-test")
    deadline = time.monotonic() + 15
    while not reclaimer.moved:
        assert time.monotonic() < deadline, "the reaper never rescued the job"
        await asyncio.sleep(0.05)
        await reclaimer.reclaim_once()
    assert dict(reclaimer.moved) == {"cancelled": 1}
    assert _reclaimed("cancelled") == counted + 1
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job.id)
    assert row["status"] == "cancelled" and row["attempts"] == 1
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    assert row["last_error"].startswith("cancelled on request; worker worker:ghost stopped")
    last = (await job_history(pool, job.id))[-1]
    assert (last["from_status"], last["to_status"], last["actor"], last["error"]) == (
        "running",
        "cancelled",
        "reaper",
        row["last_error"],
    )
    # Rescued by its lapsed lease, the entry is acked by the next sweep of idle entries (its
    # row no longer points at it): whichever sweep came first, none is left pending.
    while (await redis_client.xpending(streams.stream_key("default"), streams.GROUP))["pending"]:
        assert time.monotonic() < deadline, "the entry of the rescued job was never acked"
        await asyncio.sleep(0.05)
        await reclaimer.reclaim_once()
    assert dict(reclaimer.moved) == {"cancelled": 1}
    assert await redis_client.xrange(streams.DLQ_STREAM) == []


@pytest.mark.parametrize("sweep", ["idle entries", "expired leases"])
async def test_each_rescue_of_a_lapsed_lease_ends_a_cancel_requested_job_cancelled(
    pool, redis_client, sweep
):
    job, stream_id = await _claimed_and_cancelled(pool, redis_client)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job.id
        )
        if sweep == "idle entries":
            rescued = await lifecycle.rescue_entries(conn, [(job.id, stream_id, 1)], POLICY)
        else:
            rescued = await lifecycle.rescue_expired_leases(conn, POLICY, 10)
        row = await conn.fetchrow("SELECT status, run_at FROM jobs WHERE id = $1", job.id)
    assert [(r.id, r.reason, r.status, r.from_status) for r in rescued] == [
        (job.id, "cancelled", Status.CANCELLED, Status.RUNNING)
    ]
    assert rescued[0].error is not None and rescued[0].error.startswith("cancelled on request")
    assert row["status"] == "cancelled"


async def test_hand_back_ends_a_cancel_requested_job_cancelled_and_the_rest_pending(pool):
    jobs = [await submit(pool, "ping") for _ in range(2)]
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, [f"{i + 1}-0" for i in range(len(due))])
    entries = [(d.id, f"{i + 1}-0") for i, d in enumerate(due)]
    flagged, plain = (j.id for j in jobs)
    async with pool.acquire() as conn:
        claimed = await lifecycle.claim(conn, entries, "worker:w", 30)
        await lifecycle.cancel(conn, flagged, "api")
        back = await lifecycle.hand_back(
            conn, [(c.id, c.attempt, c.stream_id) for c in claimed], "worker:w", "shutdown"
        )
        rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM jobs")}
        redo = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
    assert back == {flagged: Status.CANCELLED, plain: Status.PENDING}
    assert rows[flagged]["status"] == "cancelled" and rows[flagged]["finished_at"] is not None
    assert rows[flagged]["last_error"] == HANDED_BACK_CANCELLED
    assert rows[flagged]["stream_id"] is None and rows[flagged]["lease_expires_at"] is None
    assert rows[plain]["status"] == "pending" and rows[plain]["last_error"] is None
    assert [d.id for d in redo] == [plain]  # only the plain one runs again
    last = (await job_history(pool, flagged))[-1]
    assert (last["from_status"], last["to_status"], last["actor"], last["error"]) == (
        "running",
        "cancelled",
        "worker:w",
        HANDED_BACK_CANCELLED,
    )
    assert (await job_history(pool, plain))[-1]["error"] == "shutdown"


async def test_a_worker_shutting_down_ends_a_job_cancelled_whose_signal_it_missed(
    pool, redis_client, stores
):
    """The cancel is recorded but its signal never reaches the worker (no pub/sub message,
    and no heartbeat before the shutdown): the hand-back ends the job cancelled."""
    settings = make_settings(stores, visibility_timeout=30.0, shutdown_grace=0.2)
    started = asyncio.Event()
    registry = load(())

    @registry.job("block")
    async def block(ctx, payload):
        started.set()
        await asyncio.sleep(60)

    job = await submit(pool, "block")
    async with running_pipeline(pool, redis_client, settings, registry):
        await asyncio.wait_for(started.wait(), 20)
        async with pool.acquire() as conn:
            assert (await lifecycle.cancel(conn, job.id, "api")).status is Status.RUNNING
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, finished_at FROM jobs WHERE id = $1", job.id)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    last = (await job_history(pool, job.id))[-1]
    assert (last["from_status"], last["to_status"], last["error"]) == (
        "running",
        "cancelled",
        HANDED_BACK_CANCELLED,
    )
    pending = await redis_client.xpending(streams.stream_key("default"), streams.GROUP)
    assert pending["pending"] == 0


async def test_an_attempt_that_failed_as_its_cancel_arrived_ends_cancelled(pool, redis_client):
    """The handler failed just before the worker could stop it: its `retrying` outcome, still
    on the way, met a job flagged for cancel, and the job ran again."""
    job, stream_id = await _claimed_and_cancelled(pool, redis_client)
    [claimed] = await _running_attempt(pool, job)
    failed = lifecycle.Outcome(job.id, claimed, Status.RETRYING, error="boom", delay=0.0)
    async with pool.acquire() as conn:
        [done] = await lifecycle.finish(conn, [(failed, stream_id)], "worker:ghost")
        row = await conn.fetchrow(
            "SELECT status, finished_at, last_error FROM jobs WHERE id=$1", job.id
        )
    assert done.status is Status.CANCELLED
    assert (row["status"], row["finished_at"] is not None, row["last_error"]) == (
        "cancelled",
        True,
        "boom",
    )
    history = await job_history(pool, job.id)
    assert (history[-1]["from_status"], history[-1]["to_status"]) == ("running", "cancelled")


async def _running_attempt(pool, job: Job) -> list[int]:
    async with pool.acquire() as conn:
        return [await conn.fetchval("SELECT attempts FROM jobs WHERE id = $1", job.id)]
