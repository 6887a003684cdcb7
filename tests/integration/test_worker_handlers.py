"""How the worker runs handlers that misbehave or block, and an intake that Redis refuses:
sync handlers get a thread each and are stopped by their timeout, a handler's own
CancelledError is a failure, and a Redis error reply to the read keeps the worker running."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from taskforge import streams
from taskforge.worker.execution import HANDLER_CANCELLED
from taskforge.worker.registry import load
from tests.conftest import make_settings
from tests.integration.helpers import running_pipeline, submit, wait_status, wait_terminal


async def test_sync_handlers_each_get_a_thread(pool, redis_client, stores):
    """Forty sync jobs that can only finish together: asyncio's default executor (six
    threads here) ran six, and the rest waited out their timeouts."""
    count = 40  # more than asyncio's default executor has on any machine below 36 CPUs
    barrier = threading.Barrier(count, timeout=15)
    registry = load(())

    @registry.job("together", timeout=30)
    def together(ctx, payload):
        return barrier.wait()

    settings = make_settings(stores, worker_concurrency=48)
    jobs = [await submit(pool, "together", max_attempts=1) for _ in range(count)]
    async with running_pipeline(pool, redis_client, settings, registry):
        done = await wait_terminal(pool, [j.id for j in jobs], timeout=60)
    assert {done[j.id].status.value for j in jobs} == {"completed"}
    assert sorted(done[j.id].result for j in jobs) == list(range(count))


async def test_a_sync_handler_past_its_timeout_is_asked_to_stop_and_not_run_beside_its_retry(
    pool, redis_client, stores
):
    """The timeout sets the handler's ``ctx.stopping``; the attempt is recorded (and the retry
    may start) only once the handler has returned. Recorded at once, the retry ran while the
    first attempt's thread was still at work."""
    spans: dict[int, list[float]] = {}
    registry = load(())

    @registry.job("slow-to-stop", timeout=0.3)
    def slow_to_stop(ctx, payload):
        began = time.monotonic()
        if ctx.attempt == 1:
            assert ctx.stopping.wait(10)  # asked to stop by the timeout
            time.sleep(0.5)  # cleaning up: the job is still running here
        spans[ctx.attempt] = [began, time.monotonic()]
        return ctx.attempt

    settings = make_settings(stores, backoff_base=0.0, backoff_max=0.0)
    job = await submit(pool, "slow-to-stop", max_attempts=2)
    async with running_pipeline(pool, redis_client, settings, registry):
        done = await wait_terminal(pool, [job.id], timeout=30)
    assert (done[job.id].status.value, done[job.id].result) == ("completed", 2)
    assert spans[2][0] >= spans[1][1]  # the retry began after the first attempt returned
    async with pool.acquire() as conn:
        errors = await conn.fetch(
            "SELECT error FROM job_events WHERE job_id = $1 AND to_status = 'retrying'", job.id
        )
    assert [e["error"] for e in errors] == ["timed out after 0.3s"]


async def test_a_cancelled_error_the_handler_raises_itself_is_a_failure(pool, redis_client, stores):
    registry = load(())

    @registry.job("awaits-cancelled")
    async def awaits_cancelled(ctx, payload):
        # Awaiting work that something else cancelled lets out a CancelledError, while
        # nobody cancelled this job: it was recorded nowhere, and the job waited its lease.
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    job = await submit(pool, "awaits-cancelled", max_attempts=1)
    settings = make_settings(stores, visibility_timeout=60.0)
    async with running_pipeline(pool, redis_client, settings, registry):
        done = await wait_terminal(pool, [job.id], timeout=20)
    assert done[job.id].status.value == "dead"
    assert done[job.id].last_error.startswith(HANDLER_CANCELLED)


async def test_an_error_reply_to_the_read_is_waited_out_with_jobs_still_running(
    pool, redis_client, stores
):
    """READONLY after a failover, MISCONF on a full disk, NOPERM after an ACL change: the read
    fails with an error reply that is not NOGROUP. The worker left its loop by exception and
    stopped, its running jobs neither finished nor handed back. Here its Redis user loses
    XREADGROUP for a while (this session's own user: other sessions share the server)."""
    user, password = f"tf-worker-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis_client.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all"
    )
    parts = urlsplit(stores.redis_url)
    url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))
    client = streams.connect(url)
    release = asyncio.Event()
    registry = load(())

    @registry.job("held")
    async def held(ctx, payload):
        await release.wait()
        return "released"

    first = await submit(pool, "held")
    try:
        async with running_pipeline(pool, client, make_settings(stores), registry):
            await wait_status(pool, first.id, "running")
            await redis_client.execute_command("ACL", "SETUSER", user, "-xreadgroup")
            await asyncio.sleep(2.5)  # the blocked read returns (1 s) and the next ones fail
            await redis_client.execute_command("ACL", "SETUSER", user, "+xreadgroup")
            release.set()
            second = await submit(pool, "held")
            done = await wait_terminal(pool, [first.id, second.id], timeout=30)
    finally:
        await client.aclose()
        await redis_client.execute_command("ACL", "DELUSER", user)
    assert {d.status.value for d in done.values()} == {"completed"}
