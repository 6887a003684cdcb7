"""Rows of every status are found through an index, though the (status, id) index is partial.

Migration 0014 keeps ``jobs_status_id_sparse`` entries only for pending, retrying, queued,
dead and cancelled rows, so that the transitions every job makes (to running, to completed)
no longer write to it. A partial index serves only statements that name its statuses as
constants: these tests fill a table mostly with completed jobs, as a queue's table is, and
read the plans PostgreSQL used (auto_explain) for the listings, the scheduler's backlog,
the room under a concurrency cap and the reaper's queued-entry pages. A listing that passed
its statuses as a parameter used the primary key and filtered every row it met under a
generic plan (the api keeps plans); a backlog or room counted with ``IN`` read the table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskforge import lifecycle
from taskforge.jobs import Status
from taskforge.lifecycle import JobFilter
from tests.integration.helpers import explaining_connection, plans_during

# A queue table: most rows finished, a backlog, a fleet's worth running, a few failures.
POPULATION = {
    Status.COMPLETED: 60_000,
    Status.PENDING: 3_000,
    Status.QUEUED: 1_000,
    Status.RUNNING: 300,
    Status.DEAD: 200,
    Status.RETRYING: 100,
    Status.CANCELLED: 100,
}

# Where each status is found: the sparse index, the lease index, or the primary key read
# backwards (completed rows are most of the table and the newest are near its head).
INDEX_OF = {
    Status.PENDING: "jobs_status_id_sparse",
    Status.RETRYING: "jobs_status_id_sparse",
    Status.QUEUED: "jobs_status_id_sparse",
    Status.DEAD: "jobs_status_id_sparse",
    Status.CANCELLED: "jobs_status_id_sparse",
    Status.RUNNING: "jobs_lease",
    Status.COMPLETED: "jobs_pkey",
}


@pytest.fixture
async def conn(stores: Any, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The populated table, analyzed, and a connection that reports its plans."""
    async with explaining_connection(stores.postgres_url) as connection:
        for status, count in POPULATION.items():
            await connection.execute(
                "INSERT INTO jobs (id, queue, type, max_attempts, timeout_seconds, status,"
                " stream_id, lease_expires_at, run_at)"
                " SELECT gen_random_uuid(), 'q' || (g % 4), 'ping', 3, 30, $2,"
                " CASE WHEN $2 IN ('queued', 'running') THEN '1-' || g END,"
                " CASE WHEN $2 = 'running' THEN now() + interval '1 minute' END,"
                " now() - interval '1 hour'"
                " FROM generate_series(1, $1) g",
                count,
                status.value,
            )
        await connection.execute("ANALYZE jobs")
        yield connection


def _reading_jobs(plans: list[str]) -> list[str]:
    found = [plan for plan in plans if " on jobs" in plan]
    assert found, f"auto_explain reported no plan reading jobs: {plans}"
    for plan in found:
        assert "Seq Scan on jobs" not in plan, plan
    return found


@pytest.mark.parametrize("status", list(Status))
async def test_a_listing_by_status_uses_its_index_also_under_a_generic_plan(conn, status):
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    pages: list[lifecycle.JobPage] = []

    async def list_twice(c: asyncpg.Connection) -> None:
        for _ in range(2):  # the second runs the plan cached by the first
            pages.append(await lifecycle.list_jobs(c, JobFilter(statuses=(status,)), 20))

    plans = _reading_jobs(await plans_during(conn, list_twice))
    for plan in plans:
        assert INDEX_OF[status] in plan, plan
    for page in pages:
        assert len(page.jobs) == 20
        assert {job.status for job in page.jobs} == {status}
        assert [job.id for job in page.jobs] == sorted((job.id for job in page.jobs), reverse=True)


async def test_a_listing_of_several_statuses_finds_exactly_them_newest_first(conn):
    wanted = (Status.RUNNING, Status.DEAD, Status.QUEUED)
    expected = await conn.fetch(
        "SELECT id FROM jobs WHERE status = ANY($1::text[]) ORDER BY id DESC LIMIT 50",
        [s.value for s in wanted],
    )
    seen: list[Any] = []
    after = None
    for _ in range(5):
        page = await lifecycle.list_jobs(conn, JobFilter(statuses=wanted), 10, after)
        seen += [job.id for job in page.jobs]
        after = page.next_after
    assert seen == [row["id"] for row in expected]


async def test_the_backlog_reads_indexes_not_the_table(conn):
    backlogs: list[lifecycle.QueueBacklog] = []

    async def publish(c: asyncpg.Connection) -> None:
        backlogs.extend(await lifecycle.queue_backlogs(c))

    _reading_jobs(await plans_during(conn, publish))
    assert sum(b.due for b in backlogs) == POPULATION[Status.PENDING] + POPULATION[Status.RETRYING]
    assert sum(b.queued for b in backlogs) == POPULATION[Status.QUEUED]
    assert sum(b.running for b in backlogs) == POPULATION[Status.RUNNING]


async def test_the_room_under_a_cap_is_counted_from_indexes(conn):
    await lifecycle.set_concurrency(conn, "q1", 400)
    in_flight = (POPULATION[Status.QUEUED] + POPULATION[Status.RUNNING]) // 4
    due: list[lifecycle.DueJob] = []

    async def dispatch_capped(c: asyncpg.Connection) -> None:
        async with c.transaction():
            due.extend(await lifecycle.select_due_capped(c, ["q1"], 500))

    _reading_jobs(await plans_during(conn, dispatch_capped))
    assert len(due) == 400 - in_flight
    assert {job.queue for job in due} == {"q1"}


async def test_the_reaper_pages_queued_rows_and_counts_dead_ones_by_index(conn):
    async def read(c: asyncpg.Connection) -> None:
        assert await lifecycle.dead_count(c) == POPULATION[Status.DEAD]
        assert len(await lifecycle.queued_entries(c, 0.0, None, 100)) == 100

    plans = _reading_jobs(await plans_during(conn, read))
    assert any("jobs_status_id_sparse" in plan for plan in plans), plans
