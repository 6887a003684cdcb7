"""Transitions under races: the fences that keep a job from running twice or losing a result."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from taskforge import lifecycle
from taskforge.jobs import Status
from taskforge.lifecycle import Outcome
from tests.integration.helpers import job_values, submit


async def _queue(pool, job_id, stream_id="1-0"):
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        assert [d.id for d in due] == [job_id]
        await lifecycle.mark_queued(conn, due, [stream_id])


async def test_claim_waits_for_a_dispatch_in_flight_instead_of_dropping_it(pool):
    """A worker can read an entry before the dispatcher commits; the claim must not miss it."""
    job = await submit(pool, "ping")
    dispatcher_conn = await pool.acquire()
    tx = dispatcher_conn.transaction()
    await tx.start()
    due = await lifecycle.select_due(dispatcher_conn, 10, [], lifecycle.new_dispatch_lock())
    await lifecycle.mark_queued(dispatcher_conn, due[:1], ["5-0"])  # not committed yet

    async def worker_claim():
        async with pool.acquire() as conn:
            return await lifecycle.claim(conn, [(job.id, "5-0")], "worker:w1", 30)

    claiming = asyncio.create_task(worker_claim())
    await asyncio.sleep(0.3)
    assert not claiming.done()  # blocked on the dispatcher's row lock
    await tx.commit()
    await pool.release(dispatcher_conn)
    claimed = await asyncio.wait_for(claiming, 10)
    assert [c.id for c in claimed] == [job.id]


async def _dispatch_in_flight(pool, stream_id):
    """A dispatch that has sent its entry (with its lock's key) but not committed yet."""
    dispatch_lock = lifecycle.new_dispatch_lock()
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    due = await lifecycle.select_due(conn, 10, [], dispatch_lock)
    await lifecycle.mark_queued(conn, due, [stream_id])
    return conn, tx, dispatch_lock


def _claim_in_background(pool, job_id, stream_id, dispatch_lock):
    async def claim():
        async with pool.acquire() as conn:
            return await lifecycle.claim(
                conn, [(job_id, stream_id)], "worker:w1", 30, [dispatch_lock]
            )

    return asyncio.create_task(claim())


async def test_claim_of_an_entry_still_dispatching_waits_on_the_dispatch_lock(pool):
    """An entry carrying its dispatch's lock: the claim waits on that advisory lock (not on
    the row) while the dispatch is in flight, and claims the job once it commits."""
    job = await submit(pool, "ping")
    dispatcher_conn, tx, dispatch_lock = await _dispatch_in_flight(pool, "5-0")
    claiming = _claim_in_background(pool, job.id, "5-0", dispatch_lock)
    await asyncio.sleep(0.3)
    assert not claiming.done()
    async with pool.acquire() as conn:
        waits = await conn.fetch(
            "SELECT locktype, classid, objid, mode FROM pg_locks WHERE NOT granted"
        )
    assert [tuple(w) for w in waits] == [
        ("advisory", lifecycle.DISPATCH_LOCK_SPACE, dispatch_lock, "ShareLock")
    ]
    await tx.commit()
    await pool.release(dispatcher_conn)
    claimed = await asyncio.wait_for(claiming, 10)
    assert [(c.id, c.attempt) for c in claimed] == [(job.id, 1)]


async def test_the_dispatch_lock_is_taken_even_when_capped_queues_filled_the_batch(pool):
    """The due-rows query then runs with LIMIT 0, and the capped rows' entries carry the key."""
    await submit(pool, "ping")
    dispatch_lock = lifecycle.new_dispatch_lock()
    async with pool.acquire() as conn, conn.transaction():
        assert await lifecycle.select_due(conn, 0, [], dispatch_lock) == []
        held = await conn.fetch(
            "SELECT classid, objid, mode FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    assert [tuple(h) for h in held] == [
        (lifecycle.DISPATCH_LOCK_SPACE, dispatch_lock, "ExclusiveLock")
    ]


async def test_claim_after_a_dispatch_rolled_back_refuses_its_entry(pool):
    """The dispatcher XADDed, then failed before its COMMIT: the entry is stale."""
    job = await submit(pool, "ping")
    dispatcher_conn, tx, dispatch_lock = await _dispatch_in_flight(pool, "5-0")
    claiming = _claim_in_background(pool, job.id, "5-0", dispatch_lock)
    await asyncio.sleep(0.2)
    await tx.rollback()
    await pool.release(dispatcher_conn)
    assert await asyncio.wait_for(claiming, 10) == []
    async with pool.acquire() as conn:
        row = await lifecycle.get_job(conn, job.id)
    assert row is not None and row.status is Status.PENDING


async def test_claim_of_a_mixed_batch_claims_each_entry_once(pool):
    """Committed entries are claimed at once; one still dispatching is waited for; a stale
    one is refused; each claimed job gets exactly one running row in its history."""
    ready = await submit(pool, "ping")
    await _queue(pool, ready.id, "1-0")
    stale = await submit(pool, "ping")
    await _queue(pool, stale.id, "2-0")
    late = await submit(pool, "ping")
    dispatcher_conn = await pool.acquire()
    tx = dispatcher_conn.transaction()
    await tx.start()
    due = await lifecycle.select_due(dispatcher_conn, 10, [], lifecycle.new_dispatch_lock())
    await lifecycle.mark_queued(dispatcher_conn, due, ["3-0"])

    async def worker_claim():
        entries = [(ready.id, "1-0"), (late.id, "3-0"), (stale.id, "9-9")]
        async with pool.acquire() as conn:
            return await lifecycle.claim(conn, entries, "worker:w1", 30)

    claiming = asyncio.create_task(worker_claim())
    await asyncio.sleep(0.3)
    assert not claiming.done()  # the committed entry alone does not end the claim
    await tx.commit()
    await pool.release(dispatcher_conn)
    claimed = await asyncio.wait_for(claiming, 10)
    assert sorted(c.id for c in claimed) == sorted([ready.id, late.id])
    assert {c.id: c.attempt for c in claimed} == {ready.id: 1, late.id: 1}
    async with pool.acquire() as conn:
        running = await conn.fetch(
            "SELECT job_id FROM job_events WHERE to_status = 'running' ORDER BY job_id"
        )
        stale_row = await lifecycle.get_job(conn, stale.id)
    assert [r["job_id"] for r in running] == sorted([ready.id, late.id])
    assert stale_row is not None and stale_row.status is Status.QUEUED


async def test_claim_of_a_stale_stream_id_is_refused(pool):
    job = await submit(pool, "ping")
    await _queue(pool, job.id, "7-0")
    async with pool.acquire() as conn:
        assert await lifecycle.claim(conn, [(job.id, "6-0")], "worker:w", 30) == []
        assert len(await lifecycle.claim(conn, [(job.id, "7-0")], "worker:w", 30)) == 1
        # A duplicate delivery of the same entry cannot claim twice.
        assert await lifecycle.claim(conn, [(job.id, "7-0")], "worker:w2", 30) == []


async def test_late_finish_cannot_overwrite_a_newer_attempt(pool):
    job = await submit(pool, "ping")
    await _queue(pool, job.id, "1-0")
    async with pool.acquire() as conn:
        first = (await lifecycle.claim(conn, [(job.id, "1-0")], "worker:a", 30))[0]
        # Simulate the reaper rescuing attempt 1, and a second worker claiming attempt 2.
        await conn.execute("UPDATE jobs SET status='queued', stream_id='2-0' WHERE id=$1", job.id)
        second = (await lifecycle.claim(conn, [(job.id, "2-0")], "worker:b", 30))[0]
        assert (first.attempt, second.attempt) == (1, 2)
        late = await lifecycle.finish(
            conn,
            [(Outcome(job.id, first.attempt, Status.COMPLETED, result_json='"late"'), "1-0")],
            "w:a",
        )
        assert late == []
        done = await lifecycle.finish(
            conn,
            [(Outcome(job.id, second.attempt, Status.COMPLETED, result_json='"b"'), "2-0")],
            "w:b",
        )
        assert [d.status for d in done] == [Status.COMPLETED]
        final = await lifecycle.get_job(conn, job.id)
    assert final is not None and final.result == "b"


async def test_a_claimed_job_carries_its_row_field_by_field(pool):
    """The claim's rows become ClaimedJobs by position: each field must be its own column."""
    run_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = await submit(
        pool,
        "mail.send",
        queue="mail",
        payload={"to": "a@example.com"},
        max_attempts=7,
        timeout_seconds=12.5,
        run_at=run_at,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
    )
    await _queue(pool, job.id, "3-1")
    async with pool.acquire() as conn:
        claimed = await lifecycle.claim(conn, [(job.id, "3-1")], "worker:w", 30)
    assert claimed == [
        lifecycle.ClaimedJob(
            id=job.id,
            queue="mail",
            type="mail.send",
            payload={"to": "a@example.com"},
            attempt=1,
            max_attempts=7,
            timeout_seconds=12.5,
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate="vendor=1",
            stream_id="3-1",
            run_at=run_at,
        )
    ]


async def test_a_finish_reports_completed_jobs_only_when_asked(pool):
    """Every outcome is recorded; without report_completed only the others come back."""
    jobs = [await submit(pool, "ping") for _ in range(4)]
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, [f"{i}-0" for i in range(len(due))])
    by_id = {d.id: f"{i}-0" for i, d in enumerate(due)}
    async with pool.acquire() as conn:
        entries = [(job.id, by_id[job.id]) for job in jobs]
        claimed = {c.id: c for c in await lifecycle.claim(conn, entries, "worker:w", 30)}
        a, b, c, d = (claimed[job.id] for job in jobs)
        outcomes = [
            Outcome(a.id, a.attempt, Status.COMPLETED, result_json="1"),
            Outcome(b.id, b.attempt, Status.DEAD, error="Fail: no"),
            Outcome(c.id, c.attempt, Status.RETRYING, error="boom", delay=60),
            Outcome(d.id, d.attempt + 1, Status.COMPLETED, result_json="2"),  # lost the job
        ]
        done = await lifecycle.finish(
            conn, [(o, by_id[o.job_id]) for o in outcomes], "worker:w", report_completed=False
        )
        assert {(f.id, f.status) for f in done} == {
            (b.id, Status.DEAD),
            (c.id, Status.RETRYING),
        }
        dead = next(f for f in done if f.id == b.id)
        assert (dead.queue, dead.type, dead.attempts, dead.last_error) == (
            "default",
            "ping",
            1,
            "Fail: no",
        )
        statuses = dict(await conn.fetch("SELECT id, status FROM jobs"))
    assert statuses == {a.id: "completed", b.id: "dead", c.id: "retrying", d.id: "running"}


async def test_retrying_finish_sets_backoff_and_returns_to_dispatch(pool):
    job = await submit(pool, "ping")
    await _queue(pool, job.id)
    async with pool.acquire() as conn:
        claimed = (await lifecycle.claim(conn, [(job.id, "1-0")], "worker:a", 30))[0]
        await lifecycle.finish(
            conn,
            [(Outcome(job.id, claimed.attempt, Status.RETRYING, error="boom", delay=30), "1-0")],
            "worker:a",
        )
        row = await lifecycle.get_job(conn, job.id)
        assert row is not None
        assert row.status is Status.RETRYING and row.last_error == "boom"
        assert (row.run_at - row.updated_at).total_seconds() > 25
        assert (
            await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock()) == []
        )  # not due yet


async def test_hand_back_returns_running_job_to_pending_at_once(pool):
    job = await submit(pool, "ping")
    await _queue(pool, job.id)
    async with pool.acquire() as conn:
        claimed = (await lifecycle.claim(conn, [(job.id, "1-0")], "worker:a", 30))[0]
        back = await lifecycle.hand_back(
            conn, [(job.id, claimed.attempt, "1-0")], "worker:a", "shutdown"
        )
        assert back == {job.id: Status.PENDING}
        row = await lifecycle.get_job(conn, job.id)
        assert row is not None and row.status is Status.PENDING
        assert [
            d.id for d in await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        ] == [job.id]


async def test_renew_leases_reports_only_owned_attempts(pool):
    job = await submit(pool, "ping")
    await _queue(pool, job.id)
    async with pool.acquire() as conn:
        claimed = (await lifecycle.claim(conn, [(job.id, "1-0")], "worker:a", 1))[0]
        owned = await lifecycle.renew_leases(conn, [(job.id, claimed.attempt, "1-0")], 60)
        assert owned == {job.id: False}
        assert await lifecycle.renew_leases(conn, [(job.id, claimed.attempt + 1, "1-0")], 60) == {}
        assert await lifecycle.renew_leases(conn, [(job.id, claimed.attempt, "2-0")], 60) == {}


async def test_two_dispatchers_never_send_the_same_row(pool):
    jobs = [await submit(pool, "ping") for _ in range(40)]
    a, b = await pool.acquire(), await pool.acquire()
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        first = await lifecycle.select_due(a, 25, [], lifecycle.new_dispatch_lock())
        second = await lifecycle.select_due(b, 25, [], lifecycle.new_dispatch_lock())
        assert not {d.id for d in first} & {d.id for d in second}
        assert len(first) + len(second) == len(jobs)
        await ta.rollback()
        await tb.rollback()
    finally:
        await pool.release(a)
        await pool.release(b)


async def test_planner_stats_are_refreshed_when_the_jobs_table_grows(pool):
    # A generic plan cached while the jobs table was nearly empty kept scanning it whole
    # once it had grown; ANALYZE on growth invalidates such plans in every session.
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE jobs")
        assert await lifecycle.refresh_planner_stats(conn) is False  # nothing grew
        await conn.execute(
            "INSERT INTO jobs (id, queue, type, max_attempts, timeout_seconds)"
            " SELECT gen_random_uuid(), 'default', 'noop', 1, 1 FROM generate_series(1, 3000)"
        )
        await conn.execute("SELECT pg_stat_force_next_flush()")
        assert await lifecycle.refresh_planner_stats(conn, min_rows=100) is True
        assert await lifecycle.refresh_planner_stats(conn, min_rows=100) is False  # analyzed


async def test_a_batch_insert_wakes_the_dispatcher_once_at_its_commit(pool):
    """The api sends no NOTIFY of its own after a submit: the insert carries it."""
    wakes: asyncio.Queue[str] = asyncio.Queue()

    def on_wake(_conn, _pid, channel, _payload):
        wakes.put_nowait(channel)

    listener = await pool.acquire()
    await listener.add_listener("taskforge_jobs", on_wake)
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await lifecycle.submit_batch(conn, [job_values(), job_values()], [None, None])
                await asyncio.sleep(0.3)
                assert wakes.empty()  # not before the rows are visible
            assert await asyncio.wait_for(wakes.get(), 5) == "taskforge_jobs"
            await asyncio.sleep(0.3)
            assert wakes.empty()  # one wake-up per insert, not one per row
            # A delayed job wakes it too: the dispatcher must learn when to look next.
            await lifecycle.submit_batch(conn, [job_values(delay_seconds=3600)], [None])
            assert await asyncio.wait_for(wakes.get(), 5) == "taskforge_jobs"
    finally:
        await listener.remove_listener("taskforge_jobs", on_wake)
        await pool.release(listener)


async def test_a_batch_stores_each_spec_as_given(pool):
    """The batch travels as one JSON document: text with quotes, escapes and astral
    characters, numbers at the edges of JSON's range, due times with other offsets and
    microseconds, and times without a zone (taken as UTC) arrive as the specs say."""
    text = 'quote " backslash \\ newline \n tab \t émoji 🎉 \u2028'
    specs = [
        job_values(payload={"text": text, "big": 2**53 + 1, "tiny": 1e-300, "neg": -0.5}),
        job_values(
            run_at=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-5.5)))
        ),
        job_values(run_at=datetime(2032, 1, 1, 12, 0, 0)),
        job_values(delay_seconds=0.25),
        job_values("a.b:c-d_e", queue="q.1-x_y", idempotency_key=text, priority=-100),
    ]
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT now()")
        results = await lifecycle.submit_batch(conn, specs, [None, None, None, None, "h"])
        stored = [await lifecycle.get_job(conn, r.job.id) for r in results]
    assert [r.job for r in results] == stored
    assert stored[0].payload == {"text": text, "big": 2**53 + 1, "tiny": 1e-300, "neg": -0.5}
    assert stored[1].run_at == datetime(2031, 5, 6, 12, 38, 9, 123456, tzinfo=UTC)
    assert stored[2].run_at == datetime(2032, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert 0.25 <= (stored[3].run_at - before).total_seconds() < 5
    assert (stored[4].type, stored[4].queue, stored[4].idempotency_key, stored[4].priority) == (
        "a.b:c-d_e",
        "q.1-x_y",
        text,
        -100,
    )
    assert [r.request_hash for r in results] == [None, None, None, None, "h"]


async def test_a_batch_reports_each_new_job_exactly_as_stored(pool):
    """submit_batch reads back only what PostgreSQL chose (id, due and creation times) and
    builds the rest from the spec (Job.submitted): it must equal the row as read back, for
    any mix of payloads, due times, keys and trace contexts."""
    specs = [
        job_values(),
        job_values("ping", payload={"b": [1.5, "x", None, {"z": True}], "a": -7}, priority=9),
        job_values(delay_seconds=30.0, max_attempts=1, timeout_seconds=2),
        job_values(run_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), queue="other"),
        job_values(idempotency_key="batch-key-1"),
        job_values(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    async with pool.acquire() as conn:
        results = await lifecycle.submit_batch(
            conn,
            specs,
            [None, None, None, None, "hash", None],
            "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
            "k=v",
        )
        stored = [await lifecycle.get_job(conn, r.job.id) for r in results]
    assert all(r.created for r in results)
    assert [r.job for r in results] == stored
    assert stored[0].traceparent == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"  # batch-wide
    assert stored[5].traceparent.startswith("00-0af7")  # the spec's own wins


async def test_outcomes_the_worker_builds_from_hostile_text_are_stored(pool):
    """An error holding a lone surrogate and a NUL, and the longest retry delay, go through
    the finish as the worker's outcome rules leave them (each raw one fails the statement)."""
    from taskforge.worker.outcomes import MAX_RETRY_DELAY, storable

    for _ in range(2):
        await submit(pool, "ping")
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, [f"{i}-0" for i in range(len(due))])
    raw = "OSError: caf\udce9\x00.txt"
    async with pool.acquire() as conn:
        entries = [(d.id, f"{i}-0") for i, d in enumerate(due)]
        a, b = await lifecycle.claim(conn, entries, "worker:w", 30)
        await lifecycle.finish(
            conn,
            [
                (
                    Outcome(
                        a.id, a.attempt, Status.RETRYING, error=storable(raw), delay=MAX_RETRY_DELAY
                    ),
                    a.stream_id,
                ),
                (Outcome(b.id, b.attempt, Status.DEAD, error=storable(raw)), b.stream_id),
            ],
            "worker:w",
        )
        rows = dict(await conn.fetch("SELECT id, last_error FROM jobs"))
        assert rows == {a.id: "OSError: caf\\udce9\\x00.txt", b.id: "OSError: caf\\udce9\\x00.txt"}
        with pytest.raises((asyncpg.PostgresError, UnicodeEncodeError, asyncpg.DataError)):
            await lifecycle.finish(
                conn,
                [(Outcome(b.id, b.attempt, Status.DEAD, error="\x00"), b.stream_id)],
                "worker:w",
            )
