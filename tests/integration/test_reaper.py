"""The reaper's reclaim sweeps against real PostgreSQL and Redis: a worker that died after
reading or claiming, leases that lapsed, entries Redis lost, poison, several replicas.

A "ghost" worker reads (and maybe claims) entries and then never heartbeats, which is what a
worker killed with SIGKILL leaves behind. Nothing here sleeps as an assertion: the reclaimer
runs rounds until the expected state shows up, within a generous bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from taskforge import lifecycle, streams
from taskforge.jobs import Status
from taskforge.lifecycle import Outcome
from taskforge.pb import messages_pb2
from taskforge.reaper.reclaim import Reclaimer
from taskforge.scheduler.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.integration.helpers import job_history, submit

VT = 0.3  # visibility timeout and lease of these tests, seconds


def _settings(stores, **overrides):
    values = {"visibility_timeout": VT, "max_deliveries": 5, **overrides}
    return make_settings(stores, **values)


async def _deliver(
    pool, redis, *, claim: bool, consumer: str = "ghost"
) -> list[tuple[uuid.UUID, str]]:
    """Dispatch every due job and read the entries as ``consumer``; claim them if asked."""
    await Dispatcher(pool, redis, batch_size=100).dispatch_once()
    read = await streams.read(redis, ["default"], consumer, 100, block_ms=10)
    wanted = [(streams.decode(sid, data).job_id, sid) for _, sid, data in read]
    if claim:
        async with pool.acquire() as conn:
            claimed = await lifecycle.claim(conn, wanted, f"worker:{consumer}", VT)
        assert len(claimed) == len(wanted)
    return wanted


async def _rounds_until(reclaimer: Reclaimer, pool, ids, statuses, timeout=15.0):
    """Run reclaim rounds until every job is in one of ``statuses``; return the rows."""
    deadline = time.monotonic() + timeout
    while True:
        await reclaimer.reclaim_once()
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM jobs WHERE id = ANY($1)", list(ids))
        if len(rows) == len(ids) and all(r["status"] in statuses for r in rows):
            return {r["id"]: r for r in rows}
        assert time.monotonic() < deadline, [(r["id"], r["status"]) for r in rows]
        await asyncio.sleep(0.05)


async def _pending_count(redis) -> int:
    info = await redis.xpending(streams.stream_key("default"), streams.GROUP)
    return int(info["pending"])


async def test_attempt_of_a_dead_worker_is_retried_and_its_entry_acked(pool, redis_client, stores):
    job = await submit(pool, "ping")
    await _deliver(pool, redis_client, claim=True)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores), name="reaper-test")
    rows = await _rounds_until(reclaimer, pool, [job.id], {"retrying"})
    row = rows[job.id]
    assert (row["attempts"], row["stream_id"], row["lease_expires_at"]) == (1, None, None)
    assert "stopped renewing its lease" in row["last_error"] and "worker:ghost" in row["last_error"]
    last = (await job_history(pool, job.id))[-1]
    assert (last["from_status"], last["to_status"], last["actor"]) == (
        "running",
        "retrying",
        "reaper",
    )
    assert await _pending_count(redis_client) == 0
    assert reclaimer.moved["lease_expired"] == 1


async def test_expired_lease_sweep_acks_the_entry_it_rescued(pool, redis_client, stores):
    """Sweep 2 alone (the entry not yet idle long enough for sweep 1) leaves nothing pending."""
    job = await submit(pool, "ping")
    await _deliver(pool, redis_client, claim=True)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores, visibility_timeout=60))
    async with pool.acquire() as conn:  # lapse the lease; the entry stays fresh in Redis
        await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s'")
    assert [r.id for r in await reclaimer.rescue_expired()] == [job.id]
    assert await _pending_count(redis_client) == 0


async def test_interrupted_last_attempt_goes_dead_with_a_dlq_notice(pool, redis_client, stores):
    job = await submit(pool, "ping", max_attempts=1)
    await _deliver(pool, redis_client, claim=True)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    row = (await _rounds_until(reclaimer, pool, [job.id], {"dead"}))[job.id]
    assert "no attempts left" in row["last_error"] and row["finished_at"] is not None
    notices = await redis_client.xrange(streams.DLQ_STREAM)
    assert [messages_pb2.DeadLetterNotice.FromString(f[b"m"]).job_id for _, f in notices] == [
        str(job.id)
    ]


async def test_entry_read_but_never_claimed_goes_back_to_pending(pool, redis_client, stores):
    job = await submit(pool, "ping")
    await _deliver(pool, redis_client, claim=False)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    row = (await _rounds_until(reclaimer, pool, [job.id], {"pending"}))[job.id]
    assert (row["attempts"], row["stream_id"], row["last_error"]) == (0, None, None)
    assert (await job_history(pool, job.id))[-1]["error"].endswith("dispatching the job again")
    assert await _pending_count(redis_client) == 0
    # The dispatcher sends it again with a new entry.
    assert await Dispatcher(pool, redis_client).dispatch_once() == 1


async def test_job_rescued_more_than_max_deliveries_times_is_poison(pool, redis_client, stores):
    job = await submit(pool, "ping", max_attempts=50)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores, max_deliveries=2))
    statuses = []
    for _ in range(3):  # a worker that crashes on this job before claiming it, three times
        await _deliver(pool, redis_client, claim=False)
        rows = await _rounds_until(reclaimer, pool, [job.id], {"pending", "dead"})
        statuses.append(rows[job.id]["status"])
    assert statuses == ["pending", "pending", "dead"]
    error = rows[job.id]["last_error"]
    assert error.startswith("poison: delivered 3 times") and "TASKFORGE_MAX_DELIVERIES=2" in error
    assert reclaimer.moved["poison"] == 1


async def test_idle_entry_of_a_live_lease_is_left_to_its_worker(pool, redis_client, stores):
    """A worker whose Redis touch failed but whose lease is renewed keeps its job and entry."""
    job = await submit(pool, "ping")
    [(_, stream_id)] = await _deliver(pool, redis_client, claim=True)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE jobs SET lease_expires_at = now() + interval '1 hour'")
    reclaimer = Reclaimer(pool, redis_client, _settings(stores), name="reaper-live")
    await asyncio.sleep(VT * 2)  # let the entry go idle past the visibility timeout
    assert await reclaimer.reclaim_once() == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "running"
    held = await redis_client.xpending_range(
        streams.stream_key("default"), streams.GROUP, "-", "+", 10
    )
    assert [h["message_id"].decode() for h in held] == [stream_id]  # still pending, not acked
    # The worker's next heartbeat takes it back.
    await streams.touch(redis_client, "ghost", [("default", stream_id)])
    held = await redis_client.xpending_range(
        streams.stream_key("default"), streams.GROUP, "-", "+", 10
    )
    assert held[0]["consumer"] == b"ghost"


async def test_expired_lease_is_rescued_after_redis_lost_the_entry(pool, redis_client, stores):
    job = await submit(pool, "ping")
    await _deliver(pool, redis_client, claim=True)
    await redis_client.flushdb()
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    row = (await _rounds_until(reclaimer, pool, [job.id], {"retrying"}))[job.id]
    assert row["attempts"] == 1


async def test_queued_job_whose_entry_redis_lost_is_sent_again(pool, redis_client, stores):
    jobs = [await submit(pool, "ping") for _ in range(3)]
    await Dispatcher(pool, redis_client).dispatch_once()
    await redis_client.flushdb()
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    rows = await _rounds_until(reclaimer, pool, [j.id for j in jobs], {"pending"})
    assert {r["attempts"] for r in rows.values()} == {0}
    assert "lost from Redis" in (await job_history(pool, jobs[0].id))[-1]["error"]
    assert reclaimer.moved["entry_lost"] == 3
    # The round recreated the stream and its group, so workers can read again.
    assert await redis_client.xinfo_groups(streams.stream_key("default"))


async def test_queued_job_whose_entry_exists_is_left_alone(pool, redis_client, stores):
    job = await submit(pool, "ping")
    await Dispatcher(pool, redis_client).dispatch_once()
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    await asyncio.sleep(VT * 2)
    assert await reclaimer.reclaim_once() == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "queued"


async def test_late_finish_cannot_overwrite_a_reclaimed_job(pool, redis_client, stores):
    job = await submit(pool, "ping")
    [(_, stream_id)] = await _deliver(pool, redis_client, claim=True)
    reclaimer = Reclaimer(pool, redis_client, _settings(stores))
    await _rounds_until(reclaimer, pool, [job.id], {"retrying"})
    async with pool.acquire() as conn:
        late = await lifecycle.finish(
            conn,
            [(Outcome(job.id, 1, Status.COMPLETED, result_json="1"), stream_id)],
            "worker:ghost",
        )
        assert late == []
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "retrying"


async def test_two_reapers_rescue_each_job_exactly_once(pool, redis_client, stores):
    claimed = [await submit(pool, "ping") for _ in range(40)]
    await _deliver(pool, redis_client, claim=True)
    unclaimed = [await submit(pool, "ping") for _ in range(40)]
    await _deliver(pool, redis_client, claim=False, consumer="ghost2")
    settings = _settings(stores)
    reapers = [Reclaimer(pool, redis_client, settings, name=f"reaper-{i}") for i in range(2)]
    await asyncio.sleep(VT * 2)
    await asyncio.gather(*(r.reclaim_once() for r in reapers), *(r.reclaim_once() for r in reapers))
    ids = [j.id for j in claimed + unclaimed]
    await _rounds_until(reapers[0], pool, ids, {"retrying", "pending"})
    async with pool.acquire() as conn:
        counts = await conn.fetch(
            "SELECT job_id, count(*) AS n FROM job_events WHERE actor = 'reaper' GROUP BY job_id"
        )
    assert len(counts) == 80 and {c["n"] for c in counts} == {1}
    assert sum(r.moved.total() for r in reapers) == 80
    assert await _pending_count(redis_client) == 0


async def test_after_a_postgres_outage_lapsed_leases_wait_for_their_workers(
    pool, redis_client, stores
):
    job = await submit(pool, "ping")
    await _deliver(pool, redis_client, claim=True)
    await asyncio.sleep(VT * 2)  # the lease lapsed while (say) PostgreSQL was down
    patient = Reclaimer(pool, redis_client, _settings(stores, visibility_timeout=60.0))
    patient.postgres_outage()
    assert await patient.reclaim_once() == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "running"
    # Without an outage behind it, the same lapsed lease is rescued.
    await _rounds_until(
        Reclaimer(pool, redis_client, _settings(stores)), pool, [job.id], {"retrying"}
    )
