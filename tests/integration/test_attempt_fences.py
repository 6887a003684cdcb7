"""An attempt is named by its attempt number and its stream entry (migration 0017).

- A replay resets a job's attempts, so a worker partitioned away while it held attempt 1 of
  the old run comes back to a job whose attempt 1 is someone else's: only the stream id,
  new with every dispatch, tells the two apart for its finish, renewal and hand-back.
- A claim whose reply was lost after its COMMIT is made again by the same worker from the
  entries it kept: the jobs it took come back as claimed, with the same attempt, instead of
  being taken for stale and left running until their lease lapses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskforge import lifecycle
from taskforge.jobs import Status
from taskforge.lifecycle import Outcome, RescuePolicy
from tests.integration.helpers import running_pipeline, submit, wait_terminal

POLICY = RescuePolicy(max_deliveries=5, backoff_base=1.0, backoff_max=60.0)


async def _queue(pool, job_id, stream_id):
    """Dispatch the one due job as the stream entry ``stream_id``."""
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        assert [d.id for d in due] == [job_id]
        await lifecycle.mark_queued(conn, due, [stream_id])


async def _claim_events(pool, job_id) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT actor FROM job_events WHERE job_id = $1 AND to_status = 'running' ORDER BY id",
            job_id,
        )
    return [row["actor"] for row in rows]


async def test_a_stale_worker_cannot_finish_or_renew_the_same_attempt_of_a_replayed_job(pool):
    job = await submit(pool, "ping", max_attempts=1)
    await _queue(pool, job.id, "1-0")
    async with pool.acquire() as conn:
        (stale,) = await lifecycle.claim(conn, [(job.id, "1-0")], "worker:a", 30)
        # Worker a is partitioned away: its lease lapses, the reaper ends its only attempt
        # dead, and an operator replays the job from the DLQ (attempts back to 0).
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job.id
        )
        (rescued,) = await lifecycle.rescue_expired_leases(conn, POLICY, 10)
        assert rescued.status is Status.DEAD
        assert await lifecycle.replay(conn, job.id, "api") is not None
    await _queue(pool, job.id, "2-0")
    async with pool.acquire() as conn:
        (fresh,) = await lifecycle.claim(conn, [(job.id, "2-0")], "worker:b", 30)
        assert (stale.attempt, fresh.attempt) == (1, 1)

        # Worker a comes back, still holding attempt 1 from entry 1-0.
        assert await lifecycle.renew_leases(conn, [(job.id, 1, "1-0")], 3600) == {}
        late = Outcome(job.id, 1, Status.COMPLETED, result_json='"stale"')
        assert await lifecycle.finish(conn, [(late, "1-0")], "worker:a") == []
        assert await lifecycle.hand_back(conn, [(job.id, 1, "1-0")], "worker:a", "shutdown") == {}
        row = await conn.fetchrow(
            "SELECT status, worker, result, stream_id,"
            " lease_expires_at < now() + interval '60 seconds' AS lease_untouched"
            " FROM jobs WHERE id = $1",
            job.id,
        )
        assert dict(row) == {
            "status": "running",
            "worker": "worker:b",
            "result": None,
            "stream_id": "2-0",
            "lease_untouched": True,
        }

        # The new owner's renewal and finish take effect.
        assert await lifecycle.renew_leases(conn, [(job.id, 1, "2-0")], 30) == {job.id: False}
        done = Outcome(job.id, 1, Status.COMPLETED, result_json='"fresh"')
        assert [f.status for f in await lifecycle.finish(conn, [(done, "2-0")], "worker:b")] == [
            Status.COMPLETED
        ]
        final = await lifecycle.get_job(conn, job.id)
        finishes = await conn.fetch(
            "SELECT actor FROM job_events WHERE job_id = $1 AND from_status = 'running'"
            " AND actor LIKE 'worker:%'",
            job.id,
        )
    assert final is not None and final.result == "fresh"
    assert [f["actor"] for f in finishes] == ["worker:b"]


async def test_a_claim_made_again_by_its_worker_returns_the_jobs_it_took(pool):
    """The second claim of the same entries by the same worker (the first one's reply lost)
    gets the same rows with the same attempt; another worker gets nothing; one claim each in
    the history."""
    jobs = [await submit(pool, "ping") for _ in range(2)]
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, [f"{i + 1}-0" for i in range(len(due))])
    entries = [(d.id, f"{i + 1}-0") for i, d in enumerate(due)]
    async with pool.acquire() as conn:
        first = await lifecycle.claim(conn, entries, "worker:w", 30)
        again = await lifecycle.claim(conn, entries, "worker:w", 30, again=True)
        other = await lifecycle.claim(conn, entries, "worker:v", 30, again=True)
        # Read afresh (Redis delivered the entries to this consumer twice), they are stale.
        redelivered = await lifecycle.claim(conn, entries, "worker:w", 30)
        attempts = await conn.fetch("SELECT attempts, worker FROM jobs")
    assert len(first) == 2 and sorted(again) == sorted(first)
    assert {c.attempt for c in again} == {1}
    assert other == [] and redelivered == []
    assert {(r["attempts"], r["worker"]) for r in attempts} == {(1, "worker:w")}
    for job in jobs:
        assert await _claim_events(pool, job.id) == ["worker:w"]


async def test_a_claim_made_again_with_new_entries_returns_each_job_once(pool):
    """A batch mixing an entry this worker claimed already with a new one: the new one is
    claimed (attempt 1), the other comes back, and neither comes back twice."""
    earlier = await submit(pool, "ping")
    await _queue(pool, earlier.id, "1-0")
    async with pool.acquire() as conn:
        (taken,) = await lifecycle.claim(conn, [(earlier.id, "1-0")], "worker:w", 30)
    new = await submit(pool, "ping")
    await _queue(pool, new.id, "2-0")
    async with pool.acquire() as conn:
        claimed = await lifecycle.claim(
            conn, [(earlier.id, "1-0"), (new.id, "2-0")], "worker:w", 30, again=True
        )
    assert sorted((c.id, c.attempt, c.stream_id) for c in claimed) == sorted(
        [(earlier.id, 1, "1-0"), (new.id, 1, "2-0")]
    )
    assert taken in claimed
    assert await _claim_events(pool, earlier.id) == ["worker:w"]
    assert await _claim_events(pool, new.id) == ["worker:w"]


async def test_a_claim_made_again_while_the_lost_one_still_commits_gets_its_jobs(pool):
    """The worker gave up on a claim PostgreSQL was still running: its claim again waits for
    that one's rows and then returns them, rather than finding them queued-and-locked, then
    running, and dropping them."""
    job = await submit(pool, "ping")
    await _queue(pool, job.id, "1-0")
    lost = await pool.acquire()
    try:
        tx = lost.transaction()
        await tx.start()
        (took,) = await lifecycle.claim(lost, [(job.id, "1-0")], "worker:w", 30)

        async def claim_again() -> list[Any]:
            async with pool.acquire() as conn:
                return await lifecycle.claim(conn, [(job.id, "1-0")], "worker:w", 30, again=True)

        again = asyncio.create_task(claim_again())
        await asyncio.sleep(0.3)
        assert not again.done()  # waiting for the lost claim's row
        await tx.commit()
    finally:
        await pool.release(lost)
    assert await asyncio.wait_for(again, 10) == [took]
    assert await _claim_events(pool, job.id) == ["worker:w"]


async def test_a_worker_whose_claim_reply_was_lost_runs_the_jobs_it_claimed(
    pool, redis_client, settings, monkeypatch
):
    """The first claim commits and then fails as a dropped connection would: the worker
    claims the entries it kept again and runs the jobs at once, attempt 1, where it used to
    ack them as stale and leave the jobs running until the reaper came."""
    claim = lifecycle.claim
    lost: list[list[Any]] = []

    async def claim_losing_the_first_reply(*args: Any, **kwargs: Any) -> Any:
        claimed = await claim(*args, **kwargs)
        if not lost:
            lost.append(claimed)
            raise ConnectionResetError("the claim committed, its reply was lost")
        return claimed

    monkeypatch.setattr(lifecycle, "claim", claim_losing_the_first_reply)
    jobs = [await submit(pool, "ping") for _ in range(3)]
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job.id for job in jobs], timeout=10)
    assert lost and lost[0]  # the first claim took jobs and its reply was dropped
    assert {(j.status, j.attempts) for j in done.values()} == {(Status.COMPLETED, 1)}
    for job in jobs:
        assert await _claim_events(pool, job.id) == ["worker:test-0"]
