"""The dispatcher's next-due time: the earliest waiting row of the queues it does not skip.

``taskforge_next_due`` (migration 0013) reads one index entry per distinct priority instead
of every waiting row; these tests hold it equal to the plain ``min(run_at)`` it replaced, for
any mix of priorities, due times, statuses and skipped queues.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskforge import lifecycle

STATUSES = ["pending", "retrying", "queued", "running", "completed", "dead", "cancelled"]
QUEUES = ["a", "b", "c"]

BRUTE_FORCE = """
SELECT EXTRACT(EPOCH FROM (min(run_at) - statement_timestamp()))::float8 FROM jobs
WHERE status IN ('pending', 'retrying') AND queue <> ALL($1::text[])
"""

rows = st.lists(
    st.tuples(
        st.sampled_from(STATUSES),
        st.sampled_from(QUEUES),
        st.integers(-3, 3),  # priority
        st.integers(-3600, 3600),  # run_at, seconds from now
    ),
    max_size=30,
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(jobs=rows, skipped=st.lists(st.sampled_from(QUEUES), unique=True))
async def test_next_due_is_the_earliest_waiting_row_of_the_queues_not_skipped(
    pool: asyncpg.Pool, jobs: list[tuple[str, str, int, int]], skipped: list[str]
) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await _insert(conn, jobs)
            # One statement, one statement_timestamp(): the answers agree to the microsecond.
            found, expected = await conn.fetchrow(
                f"SELECT taskforge_next_due($1::text[]), ({BRUTE_FORCE})", skipped
            )
        finally:
            await tx.rollback()
    if expected is None:
        assert found is None
    else:
        assert found is not None and abs(found - expected) < 1e-6


async def test_next_due_through_the_dispatcher_api(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await lifecycle.seconds_until_next_due(conn, []) is None
        await _insert(conn, [("pending", "a", 5, 600), ("retrying", "b", 0, 60)])
        await _insert(conn, [("queued", "a", 9, -60), ("pending", "c", -1, 300)])
        assert 59 < (await lifecycle.seconds_until_next_due(conn, []) or 0) <= 60
        assert 299 < (await lifecycle.seconds_until_next_due(conn, ["b"]) or 0) <= 300
        assert await lifecycle.seconds_until_next_due(conn, ["a", "b", "c"]) is None


async def _insert(conn: Any, jobs: list[tuple[str, str, int, int]]) -> None:
    await conn.executemany(
        "INSERT INTO jobs (id, queue, type, max_attempts, timeout_seconds, status, priority,"
        " run_at) VALUES ($1, $2, 'ping', 3, 30, $3, $4, now() + make_interval(secs => $5))",
        [
            (uuid.uuid4(), queue, status, priority, float(at))
            for status, queue, priority, at in jobs
        ],
    )
