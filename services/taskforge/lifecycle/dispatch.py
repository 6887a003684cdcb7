"""The scheduler's transitions and reads: due rows locked for dispatch, marked queued; the
per-queue backlog it publishes."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskforge.jobs import Status, status_of
from taskforge.lifecycle.core import RELAXED_COMMIT

__all__ = [
    "DISPATCH_LOCK_SPACE",
    "DueJob",
    "QueueBacklog",
    "dead_count",
    "mark_queued",
    "mark_queued_next_due",
    "new_dispatch_lock",
    "queue_backlogs",
    "refresh_planner_stats",
    "registered_queues",
    "seconds_until_next_due",
    "select_due",
]


# The dispatch lock: an advisory lock (this class, a random key per dispatch) the dispatcher
# takes before it XADDs and holds until its transaction ends. Each entry carries the key; a
# claim that missed entries because their dispatch had not committed yet waits on it
# (taskforge_claim, migration 0010) instead of locking the rows, which was a heap write and
# a WAL record per row, and then claims them in its second pass.
DISPATCH_LOCK_SPACE = 0x74666470  # 'tfdp' = 1952867440, as migrations 0010 and 0013 write it

# The due rows, highest priority first, locked so that another scheduler replica skips them,
# and the dispatch lock taken first (held to COMMIT, also for a limit of 0: capped queues
# filled the batch). taskforge_select_due and taskforge_next_due (migration 0013) keep one
# plan, the jobs_due index read in order, made once per session: planning them every round
# cost five times more than running them, on the way from submit to start.
SELECT_DUE = "SELECT * FROM taskforge_select_due($1, $2::text[], $3)"

NEXT_DUE = "SELECT taskforge_next_due($1::text[])"


# taskforge_mark_queued (migrations 0011, 0015) reads its rows by id through the primary key,
# whatever the statistics say (a hash join over a sequential scan made each dispatch as slow
# as the table), with a plan made once per session.
# The dispatch commits without waiting for its WAL flush: if PostgreSQL loses it, the rows
# are pending again and their stream entries stale (acked unrun); a claim, committed
# durably, flushes the WAL up to and past this dispatch. Nothing can run on a lost dispatch.
MARK_QUEUED = f"""
SELECT q.id
FROM taskforge_mark_queued($1::uuid[], $2::text[], $3::text[]) AS q(id), {RELAXED_COMMIT}
"""

# The same, and then (in the same statement, after the rows moved) the seconds until the
# next waiting row is due, as NEXT_DUE tells them; NULL for no skip list (migration 0016).
MARK_QUEUED_NEXT_DUE = f"""
SELECT taskforge_mark_queued_next_due($1::uuid[], $2::text[], $3::text[], $4::text[])
FROM {RELAXED_COMMIT}
"""

# The claim is fenced by the stream id: an entry whose row is not queued with this very
# id is stale (re-dispatched, cancelled, rescued) and must be acked without running.
# taskforge_claim (migrations 0002, 0009, 0010) waits for a dispatch still committing.


class DueJob(NamedTuple):
    """A row the dispatcher holds locked and is about to send."""

    id: uuid.UUID
    queue: str
    type: str
    attempt: int
    priority: int
    timeout_seconds: float
    traceparent: str | None
    tracestate: str | None
    status: Status

    @classmethod
    def from_row(cls, row: Any) -> DueJob:
        """From a row of a due-rows query; the attempt is the one this delivery starts."""
        return cls(
            id=row["id"],
            queue=row["queue"],
            type=row["type"],
            attempt=row["attempts"] + 1,
            priority=row["priority"],
            timeout_seconds=row["timeout_seconds"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
            status=status_of(row["status"]),
        )


def new_dispatch_lock() -> int:
    """A key for one dispatch's advisory lock: random, non-zero, a PostgreSQL ``integer``.

    Two dispatches that drew the same key only make some claims wait a little longer.
    """
    return random.randint(1, 2**31 - 1)


async def select_due(
    conn: Any, limit: int, paused: Sequence[str], dispatch_lock: int
) -> list[DueJob]:
    """Lock up to ``limit`` due rows, and the dispatch lock (call inside a transaction)."""
    rows = await conn.fetch(SELECT_DUE, limit, list(paused), dispatch_lock)
    return [DueJob.from_row(row) for row in rows]


async def seconds_until_next_due(conn: Any, paused: Sequence[str]) -> float | None:
    """Seconds until the earliest waiting row is due (negative when overdue), None if none."""
    value: float | None = await conn.fetchval(NEXT_DUE, list(paused))
    return value


async def mark_queued(conn: Any, due: Sequence[DueJob], stream_ids: Sequence[str]) -> int:
    """Record that the locked rows now have stream entries; returns how many moved.

    The rows are locked since :func:`select_due` read them, so the status it read is the
    history row's ``from_status`` (no second read of each row).
    """
    rows = await conn.fetch(
        MARK_QUEUED,
        [job.id for job in due],
        list(stream_ids),
        [job.status.value for job in due],
    )
    return len(rows)


async def mark_queued_next_due(
    conn: Any,
    due: Sequence[DueJob],
    stream_ids: Sequence[str],
    skip_queues: Sequence[str] | None,
) -> float | None:
    """:func:`mark_queued`, then :func:`seconds_until_next_due` for the queues not in
    ``skip_queues`` (None: do not ask), in one round trip; returns the latter."""
    value: float | None = await conn.fetchval(
        MARK_QUEUED_NEXT_DUE,
        [job.id for job in due],
        list(stream_ids),
        [job.status.value for job in due],
        list(skip_queues) if skip_queues is not None else None,
    )
    return value


REGISTERED_QUEUES = "SELECT name FROM queues"


async def registered_queues(conn: Any) -> list[str]:
    """Queues with a row in ``queues`` (paused, capped or otherwise configured)."""
    return [row["name"] for row in await conn.fetch(REGISTERED_QUEUES)]


QUEUE_BACKLOG = """
SELECT queue,
       count(*) FILTER (WHERE status IN ('pending', 'retrying') AND run_at <= now()) AS due,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
           WHERE status IN ('pending', 'retrying', 'queued') AND run_at <= now()))::float8
           AS oldest_age
FROM jobs
-- An OR of constants, not IN: a bitmap over the indexes that hold each status (migration
-- 0014: running rows are only in jobs_lease), where IN made a sequential scan.
WHERE (status = 'pending' OR status = 'retrying' OR status = 'queued' OR status = 'running')
GROUP BY queue
"""


DEAD_COUNT = "SELECT count(*) FROM jobs WHERE status = 'dead'"


@dataclass(frozen=True)
class QueueBacklog:
    """Waiting and running work of one queue, as PostgreSQL sees it."""

    queue: str
    due: int
    queued: int
    running: int
    oldest_age: float


async def queue_backlogs(conn: Any) -> list[QueueBacklog]:
    """Per queue: due rows not yet dispatched, queued, running, and the oldest waiting age."""
    return [
        QueueBacklog(
            queue=row["queue"],
            due=row["due"],
            queued=row["queued"],
            running=row["running"],
            oldest_age=max(row["oldest_age"] or 0.0, 0.0),
        )
        for row in await conn.fetch(QUEUE_BACKLOG)
    ]


async def dead_count(conn: Any) -> int:
    """How many jobs are in the dead-letter state."""
    value: int = await conn.fetchval(DEAD_COUNT)
    return value


JOBS_GROWTH = """
SELECT greatest(c.reltuples, 0)::bigint AS planned_for, s.n_live_tup AS live
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = 'jobs'::regclass
"""


async def refresh_planner_stats(conn: Any, min_rows: int = 1000) -> bool:
    """ANALYZE jobs when it has more than doubled since the planner last looked.

    Statements are prepared once per connection and PostgreSQL keeps a generic plan after a
    few executions; a queue table starts empty, and plans cached then (sequential scans) stay
    in use as it grows until autoanalyze comes round. The scheduler, workers and reaper plan
    every execution (see :func:`taskforge.store.create_pool`); the api keeps cached plans,
    and this ANALYZE, run by the scheduler, invalidates them in every session when the table
    has grown. Only growth matters: plans made for a large table stay good as it shrinks.
    """
    row = await conn.fetchrow(JOBS_GROWTH)
    if row is None or row["live"] <= 2 * row["planned_for"] + min_rows:
        return False
    await conn.execute("ANALYZE jobs")
    return True
