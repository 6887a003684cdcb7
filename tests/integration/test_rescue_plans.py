"""The reaper's and the hand-back's batch lookups find their rows by id whatever the statistics.

Like the claim and the finish (``test_batch_plans``), they join a batch of entries to jobs.
With the expected status written as a constant, statistics taken before a backlog arrived
("no queued rows") made the planner start from the status index and rescan the batch for
every queued or running row: a rescue of 5 lost entries among 300k queued jobs took 456 ms,
just when Redis had lost a backlog's entries. These tests make the statistics stale on
purpose and read the plans PostgreSQL used (auto_explain).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskforge import lifecycle
from taskforge.lifecycle import RescuePolicy
from tests.integration.helpers import (
    assert_lookups_by_id,
    explaining_connection,
    insert_rows,
    plans_during,
    stale_statistics,
)

POLICY = RescuePolicy(max_deliveries=5, backoff_base=1.0, backoff_max=60.0)


@pytest.fixture
async def conn(stores: Any, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own (its settings are changed), configured as the deployables'."""
    async with explaining_connection(stores.postgres_url) as connection:
        yield connection


def _plans_of(notices: list[str], statement: str) -> list[str]:
    """The plans of the statement that opens with ``statement`` (its CTE's name)."""
    return [n for n in notices if statement in n]


async def test_lost_entries_are_found_by_id_among_a_large_backlog(conn):
    await stale_statistics(conn)
    queued = await insert_rows(conn, 3000, "queued")
    lost = [(row["id"], row["stream_id"]) for row in queued[:5]]

    async def rescue(c: asyncpg.Connection) -> None:
        rescued = await lifecycle.rescue_lost_entries(c, lost, POLICY)
        assert {r.reason for r in rescued} == {"entry_lost"} and len(rescued) == 5

    assert_lookups_by_id(_plans_of(await plans_during(conn, rescue), "WITH target AS"))


@pytest.mark.parametrize("status", ["queued", "running"])
async def test_reclaimed_entries_are_found_by_id_among_a_large_backlog(conn, status):
    await stale_statistics(conn)
    rows = await insert_rows(conn, 3000, status)
    entries = [(row["id"], row["stream_id"], 1) for row in rows[:5]]

    async def rescue(c: asyncpg.Connection) -> None:
        # Each entry's row is found: queued ones go back to pending; running ones without
        # an expired lease are reported live and left alone.
        rescued = await lifecycle.rescue_entries(c, entries, POLICY)
        assert sorted(r.id for r in rescued) == sorted(e[0] for e in entries)

    assert_lookups_by_id(_plans_of(await plans_during(conn, rescue), "WITH target AS"))


async def test_a_shutdown_hands_back_its_jobs_by_id_among_every_running_job(conn):
    await stale_statistics(conn)
    running = await insert_rows(conn, 3000, "running")
    attempts = [(row["id"], 1, row["stream_id"]) for row in running[:5]]

    async def hand_back(c: asyncpg.Connection) -> None:
        back = await lifecycle.hand_back(c, attempts, "worker:w", "shutdown")
        assert sorted(back) == sorted(job_id for job_id, _, _ in attempts)

    assert_lookups_by_id(_plans_of(await plans_during(conn, hand_back), "WITH back AS"))
