"""The batched transitions look rows up by id even when the planner's statistics are stale.

A queue table's statistics are always out of date: taken while it held other statuses or
fewer rows, they led the planner to hash the batch and scan jobs for the other side (the
whole table for a dispatch, every queued row for a claim, every running row for a finish or
a heartbeat's lease renewal). These tests make the statistics stale on purpose and read the
plans PostgreSQL used (auto_explain, sent to this client as notices), also after the same
session has run them on a table of one row: they keep the plan made then (migration 0015),
and the nested loop of 0011, made then, read the whole primary key for every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from taskforge import lifecycle
from taskforge.jobs import Status
from taskforge.lifecycle import DueJob, Outcome
from tests.integration.helpers import (
    assert_lookups_by_id,
    explaining_connection,
    insert_rows,
    job_values,
    plans_during,
    stale_statistics,
)


@pytest.fixture
async def conn(stores: Any, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own (its settings are changed), configured as the deployables'."""
    async with explaining_connection(stores.postgres_url) as connection:
        yield connection


async def _plans_of_updates(
    conn: asyncpg.Connection, call: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> list[str]:
    return [n for n in await plans_during(conn, call) if "UPDATE jobs j" in n]


async def test_dispatch_marks_rows_queued_by_id(conn):
    await stale_statistics(conn)
    await insert_rows(conn, 3000, "pending")

    async def dispatch(c: asyncpg.Connection) -> None:
        async with c.transaction():
            due = await lifecycle.select_due(c, 500, [], lifecycle.new_dispatch_lock())
            moved = await lifecycle.mark_queued(c, due, [f"1-{i}" for i in range(len(due))])
            assert moved == 500

    assert_lookups_by_id(await _plans_of_updates(conn, dispatch))


async def test_dispatch_still_commits_without_waiting_for_its_wal_flush(conn):
    await insert_rows(conn, 3, "pending")
    async with conn.transaction():
        due = await lifecycle.select_due(conn, 10, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, ["1-0", "1-1", "1-2"])
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_claim_finds_its_rows_by_id_not_by_scanning_the_backlog(conn):
    await stale_statistics(conn)
    queued = await insert_rows(conn, 3000, "queued")
    entries = [(row["id"], row["stream_id"]) for row in queued[:64]]

    async def claim(c: asyncpg.Connection) -> None:
        assert len(await lifecycle.claim(c, entries, "worker:w", 30)) == 64

    assert_lookups_by_id(await _plans_of_updates(conn, claim))


async def test_a_claim_made_again_finds_its_running_rows_by_id(conn):
    """A worker claiming again the entries of a claim whose reply it lost: the step that
    returns rows already running for it (migration 0017) finds them by id too."""
    await stale_statistics(conn)
    running = await insert_rows(conn, 3000, "running")
    await conn.execute(
        "UPDATE jobs SET worker = 'worker:w', started_at = now() - interval '1 second'"
        " WHERE id = ANY($1::uuid[])",
        [row["id"] for row in running[:64]],
    )
    entries = [(row["id"], row["stream_id"]) for row in running[:64]]

    async def claim(c: asyncpg.Connection) -> None:
        assert len(await lifecycle.claim(c, entries, "worker:w", 30, again=True)) == 64

    plans = await _plans_of_updates(conn, claim)
    assert any("AND j.worker = p_worker" in plan for plan in plans), plans  # the step ran
    assert_lookups_by_id(plans)


async def test_finish_finds_its_rows_by_id_not_by_scanning_every_running_job(conn):
    await stale_statistics(conn)
    running = await insert_rows(conn, 3000, "running")
    outcomes = [
        (Outcome(row["id"], 1, Status.COMPLETED, result_json="1"), row["stream_id"])
        for row in running[:64]
    ]

    async def finish(c: asyncpg.Connection) -> None:
        assert len(await lifecycle.finish(c, outcomes, "worker:w")) == 64

    assert_lookups_by_id(await _plans_of_updates(conn, finish))


async def _claim(c: asyncpg.Connection, rows: list[Any]) -> None:
    entries = [(row["id"], row["stream_id"]) for row in rows]
    assert len(await lifecycle.claim(c, entries, "worker:w", 30)) == len(rows)


async def _finish(c: asyncpg.Connection, rows: list[Any]) -> None:
    outcomes = [
        (Outcome(row["id"], 1, Status.COMPLETED, result_json="1"), row["stream_id"]) for row in rows
    ]
    assert len(await lifecycle.finish(c, outcomes, "worker:w")) == len(rows)


async def _renew(c: asyncpg.Connection, rows: list[Any]) -> None:
    renewed = await lifecycle.renew_leases(
        c, [(row["id"], 1, row["stream_id"]) for row in rows], 30
    )
    assert len(renewed) == len(rows)


async def _mark_queued(c: asyncpg.Connection, rows: list[Any]) -> None:
    due = [
        DueJob(row["id"], "default", "ping", 1, 0, 30.0, None, None, Status.PENDING) for row in rows
    ]
    async with c.transaction():
        moved = await lifecycle.mark_queued(c, due, [f"1-{i}" for i in range(len(rows))])
    assert moved == len(rows)


@pytest.mark.parametrize(
    ("transition", "status"),
    [(_claim, "queued"), (_finish, "running"), (_renew, "running"), (_mark_queued, "pending")],
    ids=["claim", "finish", "renew", "mark_queued"],
)
async def test_a_plan_made_on_a_one_row_table_is_kept_and_still_finds_rows_by_id(
    conn, transition, status
):
    """Each batch transition plans its UPDATE once per session (a generic plan, its batch
    shown as $1) and keeps it: made while jobs held one row, it must still find 64 rows of a
    3000-row backlog by id (the nested loop of 0011, cached then, read the whole primary key
    for every call)."""
    [first] = await insert_rows(conn, 1, status)
    await conn.execute("ANALYZE jobs")
    await transition(conn, [first])  # planned now, on a table of one row
    rows = await insert_rows(conn, 3000, status)

    plans = await _plans_of_updates(conn, lambda c: transition(c, rows[:64]))
    assert_lookups_by_id(plans)
    assert all("(id = ANY ($1))" in plan for plan in plans), f"not a generic plan: {plans}"


async def test_lease_renewal_finds_its_rows_by_id_not_by_scanning_every_running_job(conn):
    await stale_statistics(conn)
    running = await insert_rows(conn, 3000, "running")
    attempts = [(row["id"], 1, row["stream_id"]) for row in running[:64]]

    async def renew(c: asyncpg.Connection) -> None:
        renewed = await lifecycle.renew_leases(c, attempts, 30)
        assert renewed == {job_id: False for job_id, _, _ in attempts}

    assert_lookups_by_id(await _plans_of_updates(conn, renew))


async def _plans_reading_jobs_due(
    conn: asyncpg.Connection, call: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> list[str]:
    return [
        n
        for n in await plans_during(conn, call)
        if "FROM jobs j" in n and "'pending', 'retrying'" in n
    ]


async def test_due_rows_keep_one_plan_made_on_an_empty_table(conn):
    """The due-rows and next-due queries are planned once per session (a generic plan, its
    parameters shown as $n) and that plan reads the jobs_due index in order, whatever the
    table held when it was made and whatever the statistics say now."""

    async def round_(c: asyncpg.Connection) -> None:
        async with c.transaction():
            await lifecycle.select_due(c, 500, ["paused"], lifecycle.new_dispatch_lock())
        await lifecycle.seconds_until_next_due(c, ["paused"])

    await conn.execute("ANALYZE jobs")
    for _ in range(2):  # planned on the empty table, and cached
        await round_(conn)
    await stale_statistics(conn)
    await insert_rows(conn, 3000, "pending")

    plans = await _plans_reading_jobs_due(conn, round_)
    assert len(plans) == 2, plans
    for plan in plans:
        assert "Index Scan using jobs_due on jobs j" in plan or (
            "Index Only Scan using jobs_due on jobs j" in plan
        ), plan
        assert "Seq Scan" not in plan and "Bitmap" not in plan and "Sort" not in plan, plan
        assert "ALL ($2)" in plan or "ALL ($1)" in plan, f"not a generic plan: {plan}"


async def test_a_batch_without_idempotency_keys_inserts_without_conflict_handling(conn):
    """ON CONFLICT makes every row a speculative insertion; only a batch that carries keys
    needs it, and then a taken key still returns the existing job."""
    plain = [job_values(), job_values()]
    keyed = [job_values(), job_values(idempotency_key="k-1")]

    async def submit_both(c: asyncpg.Connection) -> None:
        created = await lifecycle.submit_batch(c, plain, [None, None])
        assert [r.created for r in created] == [True, True]
        first = await lifecycle.submit_batch(c, keyed, [None, "h"])
        again = await lifecycle.submit_batch(c, keyed[1:], ["h"])
        assert [r.created for r in first + again] == [True, True, False]
        assert again[0].job.id == first[1].job.id

    inserts = [p for p in await plans_during(conn, submit_both) if "Insert on jobs" in p]
    assert len(inserts) == 3, inserts
    assert "Conflict Resolution" not in inserts[0], inserts[0]
    assert all("Conflict Resolution: NOTHING" in p for p in inserts[1:]), inserts[1:]
