"""The whole path in one process: pending → queued → running → completed/retrying/dead."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from taskforge import streams
from taskforge.config import Settings
from taskforge.jobs import Status, uuid7s
from taskforge.lifecycle import submit_batch
from taskforge.pb import messages_pb2
from taskforge.worker.registry import Registry, Retry, load
from tests.integration.helpers import job_values, running_pipeline, submit, wait_terminal


async def test_ping_job_completes_with_its_result(pool, redis_client, settings):
    job = await submit(pool, "ping", payload={"message": "hello"})
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
    finished = done[job.id]
    assert finished.status is Status.COMPLETED
    assert finished.result == {"message": "hello"}
    assert finished.attempts == 1
    assert finished.started_at is not None and finished.finished_at is not None


async def test_every_transition_is_recorded_in_history(pool, redis_client, settings):
    job = await submit(pool, "ping")
    async with running_pipeline(pool, redis_client, settings):
        await wait_terminal(pool, [job.id])
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT from_status, to_status, attempt, actor FROM job_events WHERE job_id = $1"
            " ORDER BY id",
            job.id,
        )
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        (None, "pending"),
        ("pending", "queued"),
        ("queued", "running"),
        ("running", "completed"),
    ]
    assert events[2]["actor"].startswith("worker:")


async def test_fail_job_dies_after_max_attempts_with_dlq_notice(pool, redis_client, settings):
    job = await submit(pool, "fail", max_attempts=3)
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
    assert done[job.id].status is Status.DEAD
    assert done[job.id].attempts == 3
    entries = await redis_client.xrange(streams.DLQ_STREAM)
    notices = [messages_pb2.DeadLetterNotice.FromString(f[b"m"]) for _, f in entries]
    assert [(n.job_id, n.attempts) for n in notices] == [(str(job.id), 3)]


async def test_dead_job_dies_after_one_attempt(pool, redis_client, settings):
    job = await submit(pool, "dead")
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
    assert (done[job.id].status, done[job.id].attempts) == (Status.DEAD, 1)
    assert "Fail" in (done[job.id].last_error or "")


async def test_unknown_type_goes_dead_at_once_naming_the_fix(pool, redis_client, settings):
    job = await submit(pool, "no.such.type")
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
    assert (done[job.id].status, done[job.id].attempts) == (Status.DEAD, 1)
    assert "TASKFORGE_HANDLERS" in (done[job.id].last_error or "")


async def test_retry_with_delay_then_success(pool, redis_client, settings):
    registry = Registry()
    seen: list[int] = []

    @registry.job("flaky")
    async def flaky(ctx, payload):
        seen.append(ctx.attempt)
        if ctx.attempt < 2:
            raise Retry("not yet", delay=0.1)
        return "ok"

    combined = load(())
    combined.include(registry)
    job = await submit(pool, "flaky")
    async with running_pipeline(pool, redis_client, settings, combined):
        done = await wait_terminal(pool, [job.id])
    assert done[job.id].status is Status.COMPLETED
    assert seen == [1, 2]


async def test_sync_handler_runs_in_a_thread(pool, redis_client, settings):
    registry = load(())
    import threading

    main_thread = threading.get_ident()

    @registry.job("sync.add")
    def add(ctx, payload):
        return {
            "sum": payload["a"] + payload["b"],
            "other_thread": threading.get_ident() != main_thread,
        }

    job = await submit(pool, "sync.add", payload={"a": 2, "b": 3})
    async with running_pipeline(pool, redis_client, settings, registry):
        done = await wait_terminal(pool, [job.id])
    assert done[job.id].result == {"sum": 5, "other_thread": True}


async def test_timeout_fails_the_attempt(pool, redis_client, settings):
    job = await submit(pool, "sleep", payload={"seconds": 5}, timeout_seconds=0.2, max_attempts=1)
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
    assert done[job.id].status is Status.DEAD
    assert "timed out after 0.2s" in (done[job.id].last_error or "")


async def test_higher_priority_dispatched_first(pool, redis_client, settings: Settings):
    low = await submit(pool, "ping", priority=-5)
    high = await submit(pool, "ping", priority=50)
    from taskforge.scheduler.dispatcher import Dispatcher

    dispatcher = Dispatcher(pool, redis_client, batch_size=10)
    assert await dispatcher.dispatch_once() == 2
    entries = await redis_client.xrange(streams.stream_key("default"))
    order = [messages_pb2.JobMessage.FromString(f[b"m"]).job_id for _, f in entries]
    assert order == [str(high.id), str(low.id)]


async def test_delayed_job_waits_for_its_time(pool, redis_client, settings):
    job = await submit(pool, "ping", delay_seconds=0.6)
    async with running_pipeline(pool, redis_client, settings):
        await asyncio.sleep(0.3)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT status FROM jobs WHERE id=$1", job.id) == "pending"
        done = await wait_terminal(pool, [job.id])
    assert done[job.id].status is Status.COMPLETED
    assert done[job.id].started_at >= done[job.id].run_at


async def test_hundreds_of_jobs_across_two_workers_all_complete(pool, redis_client, settings):
    jobs = [await submit(pool, "ping", payload={"message": str(i)}) for i in range(300)]
    async with running_pipeline(pool, redis_client, settings, workers=2):
        done = await wait_terminal(pool, [j.id for j in jobs], timeout=60)
    assert {j.status for j in done.values()} == {Status.COMPLETED}
    async with pool.acquire() as conn:
        runs = await conn.fetchval("SELECT count(*) FROM job_events WHERE to_status = 'running'")
    assert runs == 300  # each ran exactly once


async def test_stale_entry_is_acked_without_running(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, settings
):
    job = await submit(pool, "ping")
    await streams.ensure_groups(redis_client, ["default"])
    # An entry for a row that is still pending (never dispatched): stale.
    data = streams.encode(job.id, "ping", "default", 1, 0, 30.0, {})
    await streams.send(redis_client, [("default", data)])
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id])
        await asyncio.sleep(0.2)
    assert done[job.id].attempts == 1  # ran once, through its real dispatch
    pending = await redis_client.xpending(streams.stream_key("default"), streams.GROUP)
    assert pending["pending"] == 0


async def test_entry_of_a_job_lost_before_its_flush_is_acked_without_running(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, settings
):
    """A submit's insert is visible (and dispatched) before its WAL flush; a crash in that
    window loses the row, never answered for. Its entry refers to no row: dropped, and the
    worker goes on."""
    lost = uuid7s(1)[0]
    await streams.ensure_groups(redis_client, ["default"])
    data = streams.encode(lost, "ping", "default", 1, 0, 30.0, {})
    await streams.send(redis_client, [("default", data)])
    async with running_pipeline(pool, redis_client, settings):
        job = await submit(pool, "ping")
        done = await wait_terminal(pool, [job.id])
        await asyncio.sleep(0.2)
    assert done[job.id].status is Status.COMPLETED
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", lost) == 0
    pending = await redis_client.xpending(streams.stream_key("default"), streams.GROUP)
    assert pending["pending"] == 0


async def test_worker_metrics_count_every_attempt_and_outcome(pool, redis_client, settings):
    """Counted per batch and job type, they still add up to one per attempt."""

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"queue": "default", **labels}) or 0.0

    def snapshot() -> dict[str, float]:
        return {
            "attempts": value("taskforge_job_attempts_total", type="ping"),
            "success": value("taskforge_job_success_total", type="ping"),
            "runtime": value("taskforge_job_runtime_seconds_count", type="ping"),
            "waited": value("taskforge_job_time_in_queue_seconds_count"),
            "timeouts": value("taskforge_job_failure_total", type="sleep", outcome="dead"),
            "sleep_runtime": value("taskforge_job_runtime_seconds_count", type="sleep"),
        }

    before = snapshot()
    ok = [await submit(pool, "ping", payload={"n": i}) for i in range(30)]
    slow = await submit(pool, "sleep", payload={"seconds": 5}, timeout_seconds=0.1, max_attempts=1)
    async with running_pipeline(pool, redis_client, settings):
        await wait_terminal(pool, [job.id for job in [*ok, slow]])
        await asyncio.sleep(0.2)  # the finisher counts right after it records
    after = snapshot()
    delta = {key: after[key] - before[key] for key in before}
    assert delta == {
        "attempts": 30,
        "success": 30,
        "runtime": 30,
        "waited": 31,
        "timeouts": 1,
        "sleep_runtime": 1,
    }


async def test_a_job_delayed_less_than_the_poll_interval_starts_on_time(
    pool, redis_client, settings
):
    """The insert's NOTIFY tells a sleeping dispatcher when the delayed job is due."""
    slow_poll = replace(settings, poll_interval=30.0)
    async with running_pipeline(pool, redis_client, slow_poll):
        await asyncio.sleep(0.5)  # the dispatcher has looked once and sleeps
        async with pool.acquire() as conn:
            [stored] = await submit_batch(conn, [job_values(delay_seconds=1.0)], [None])
        done = await wait_terminal(pool, [stored.job.id], timeout=10)
    job = done[stored.job.id]
    assert job.status is Status.COMPLETED
    assert job.started_at is not None
    late = (job.started_at - job.run_at).total_seconds()
    assert late < 1.0, f"started {late:.2f}s after it was due (poll interval 30s)"
