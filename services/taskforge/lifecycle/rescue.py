"""The reaper's transitions: jobs whose worker or stream entry was lost go back through
PostgreSQL, and old finished jobs are deleted.

- an interrupted attempt (``running``, lease expired) → ``retrying`` after the usual backoff,
  or ``dead`` when no attempt is left; ``cancelled`` if a cancel was requested (its worker
  stopped before it could end the job as asked, and the job must not run again);
- a ``queued`` job whose entry was read but never claimed, or whose entry Redis lost → ``pending``
  (the dispatcher sends it again);
- a job delivered more than ``max_deliveries`` times without an outcome → ``dead`` (poison).

Each is one statement that locks the rows it looks at, decides, updates and inserts the
``job_events`` rows (actor ``reaper``), so several reapers, workers and schedulers can race
on the same job and exactly one transition wins. A ``running`` row whose lease is still live
is never touched: its worker is alive.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskforge.jobs import Status

__all__ = [
    "QueuedEntry",
    "RescuePolicy",
    "Rescued",
    "delete_finished",
    "queued_entries",
    "rescue_entries",
    "rescue_expired_leases",
    "rescue_lost_entries",
]

ACTOR = "reaper"

# $1 max deliveries, $2 backoff base, $3 backoff max; each query's ``target`` CTE yields
# id, status, attempts, max_attempts, worker, stream_id, cancel_requested, expired,
# deliveries, cause. Deliveries without an outcome = this one's + earlier rescues of the job
# (a lost entry was never delivered, so it does not count); past the limit the job is poison.
# A cancel requested of an interrupted attempt wins over poison and over the attempts left:
# whatever else, the operator asked for the job to stop, and it has.
_DECIDE_AND_MOVE = """
, counted AS (
    SELECT t.*, t.deliveries + CASE WHEN t.deliveries > 0 THEN (
        SELECT count(*) FROM job_events e
        WHERE e.job_id = t.id AND e.actor = 'reaper' AND e.from_status IN ('queued', 'running')
          AND e.error NOT LIKE 'stream entry % was lost from Redis%'
    )::int ELSE 0 END AS total
    FROM target t
), decided AS (
    SELECT c.*,
        CASE WHEN c.status = 'running' AND NOT COALESCE(c.expired, false) THEN NULL
             WHEN c.status = 'running' AND c.cancel_requested THEN 'cancelled'
             WHEN c.total > $1 THEN 'dead'
             WHEN c.status = 'queued' THEN 'pending'
             WHEN c.attempts >= c.max_attempts THEN 'dead'
             ELSE 'retrying' END AS to_status,
        CASE WHEN c.status = 'running' AND c.cancel_requested THEN 'cancelled'
             WHEN c.total > $1 THEN 'poison'
             WHEN c.status = 'queued' AND c.cause = 'lost' THEN 'entry_lost'
             WHEN c.status = 'queued' THEN 'unclaimed'
             ELSE 'lease_expired' END AS reason
    FROM counted c
), described AS (
    SELECT d.*, CASE d.reason
        WHEN 'poison' THEN format('poison: delivered %s times without an outcome (more than '
            'TASKFORGE_MAX_DELIVERIES=%s); a worker may be crashing on this job: check its '
            'payload and handler, then replay it from the DLQ', d.total, $1)
        WHEN 'entry_lost' THEN format('stream entry %s was lost from Redis (restart, flush or '
            'failover); dispatching the job again', d.stream_id)
        WHEN 'unclaimed' THEN format('stream entry %s was read but never claimed (the worker '
            'stopped first); dispatching the job again', d.stream_id)
        WHEN 'cancelled' THEN format('cancelled on request; worker %s stopped renewing its '
            'lease (it died, hung or lost its stores) before ending attempt %s of %s',
            COALESCE(d.worker, '?'), d.attempts, d.max_attempts)
        ELSE format('attempt %s of %s interrupted: worker %s stopped renewing its lease (it '
            'died, hung or lost its stores)%s', d.attempts, d.max_attempts,
            COALESCE(d.worker, '?'), CASE WHEN d.attempts >= d.max_attempts
            THEN '; no attempts left' ELSE '; retrying' END)
        END AS error
    FROM decided d
), moved AS (
    UPDATE jobs j SET status = d.to_status,
        -- full-jitter exponential backoff, as jobs.backoff_delay computes it for workers
        run_at = CASE WHEN d.to_status = 'retrying' THEN now() + make_interval(secs =>
                     random() * LEAST($3, $2 * power(2, LEAST(GREATEST(d.attempts - 1, 0), 60))))
                 ELSE j.run_at END,
        last_error = CASE WHEN d.to_status IN ('retrying', 'dead', 'cancelled') THEN d.error
                          ELSE j.last_error END,
        finished_at = CASE WHEN d.to_status IN ('dead', 'cancelled') THEN now()
                           ELSE j.finished_at END,
        lease_expires_at = NULL, stream_id = NULL, updated_at = now()
    FROM described d
    WHERE j.id = d.id AND d.to_status IS NOT NULL
    RETURNING j.id, j.queue, j.type, j.status, j.attempts, j.traceparent,
              d.status AS from_status, d.reason, d.error, d.stream_id
), ev AS (
    INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
    SELECT id, from_status, status, attempts, 'reaper', error FROM moved
), wake AS (
    SELECT pg_notify('taskforge_jobs', '') FROM moved WHERE status = 'pending' LIMIT 1
)
SELECT m.id, m.queue, m.type, m.status, m.attempts, m.traceparent, m.from_status, m.reason,
       m.error, m.stream_id
FROM moved m LEFT JOIN wake ON true
UNION ALL
SELECT d.id, NULL, NULL, NULL, d.attempts, NULL, d.status, 'live', NULL, d.stream_id
FROM described d WHERE d.to_status IS NULL
"""

# The statements that look up a batch of entries take the statuses they expect from the
# batch (columns of the unnest), never as constants, as the claim and finish do (migration
# 0011): with a constant, statistics taken before a backlog arrived ("no queued rows") made
# the planner start from the status index and rescan the batch for every queued row — 456 ms
# for 5 lost entries among 300k queued jobs, just when Redis has lost a backlog's entries.
# As a join column the status can only be checked on the rows the primary key finds.

# Entries the reaper reclaimed from the stream: only a row still pointing at that very
# entry is concerned; FOR UPDATE waits for a racing claim or finish and re-reads the row.
RESCUE_ENTRIES = (
    """
WITH target AS (
    SELECT j.id, j.status, j.attempts, j.max_attempts, j.worker, j.stream_id, j.cancel_requested,
           j.lease_expires_at < now() AS expired, e.deliveries, 'entry'::text AS cause
    FROM jobs j
    JOIN unnest($4::uuid[], $5::text[], $6::int[],
                array_fill('queued'::text, ARRAY[cardinality($4::uuid[])]),
                array_fill('running'::text, ARRAY[cardinality($4::uuid[])]))
         AS e(id, stream_id, deliveries, queued, running)
         ON j.id = e.id
    WHERE j.stream_id = e.stream_id AND (j.status = e.queued OR j.status = e.running)
    ORDER BY j.id  -- the claim's lock order: a concurrent claim waits, never deadlocks
    FOR UPDATE OF j
)"""
    + _DECIDE_AND_MOVE
)

# Leases that lapsed, whatever Redis still holds (it may have lost the entry): the worker
# stopped renewing, so it has fenced itself off. SKIP LOCKED lets replicas share the work.
RESCUE_EXPIRED = (
    """
WITH target AS (
    SELECT j.id, j.status, j.attempts, j.max_attempts, j.worker, j.stream_id, j.cancel_requested,
           true AS expired, 1 AS deliveries, 'lease'::text AS cause
    FROM jobs j
    WHERE j.status = 'running' AND j.lease_expires_at < now()
    ORDER BY j.lease_expires_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)"""
    + _DECIDE_AND_MOVE
)

# Queued rows whose entry Redis no longer has. An entry never reappears, so a row still
# queued with that id cannot be claimed by anyone; it is not a delivery (never poison).
RESCUE_LOST = (
    """
WITH target AS (
    SELECT j.id, j.status, j.attempts, j.max_attempts, j.worker, j.stream_id, j.cancel_requested,
           NULL::boolean AS expired, 0 AS deliveries, 'lost'::text AS cause
    FROM jobs j
    JOIN unnest($4::uuid[], $5::text[], array_fill('queued'::text, ARRAY[cardinality($4::uuid[])]))
         AS e(id, stream_id, expected)
         ON j.id = e.id
    WHERE j.stream_id = e.stream_id AND j.status = e.expected
    ORDER BY j.id
    FOR UPDATE OF j
)"""
    + _DECIDE_AND_MOVE
)

# Keyset pages over queued rows that have waited longer than $1 seconds (uses the
# (status, id) index); the reaper checks their entries still exist.
QUEUED_ENTRIES = """
SELECT id, queue, stream_id, created_at FROM jobs
WHERE status = 'queued' AND stream_id IS NOT NULL
  AND updated_at < now() - make_interval(secs => $1)
  AND id > $2::uuid
ORDER BY id
LIMIT $3
"""

DELETE_FINISHED = """
WITH doomed AS (
    SELECT id FROM jobs
    WHERE status = ANY($1::text[]) AND updated_at < now() - make_interval(secs => $2)
    ORDER BY updated_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
), history AS (
    -- job_events has no foreign key (migration 0006): a job's history goes with it here.
    DELETE FROM job_events e USING gone g WHERE e.job_id = g.id
)
SELECT count(*) FROM gone
"""

_NIL = uuid.UUID(int=0)


@dataclass(frozen=True)
class RescuePolicy:
    """The limits a rescue applies: poison threshold and the retry backoff."""

    max_deliveries: int
    backoff_base: float
    backoff_max: float

    def args(self) -> tuple[int, float, float]:
        return self.max_deliveries, self.backoff_base, self.backoff_max


@dataclass(frozen=True)
class Rescued:
    """One job the reaper looked at: moved (``status`` set) or left alone (``live``).

    ``reason`` is lease_expired (→ retrying or dead), cancelled (an interrupted attempt whose
    cancel was requested → cancelled), unclaimed or entry_lost (→ pending), poison (→ dead),
    or live: a running job whose lease is still renewed, whose entry the reaper must not
    acknowledge.
    """

    id: uuid.UUID
    stream_id: str | None
    reason: str
    status: Status | None
    from_status: Status
    attempts: int
    queue: str | None = None
    type: str | None = None
    error: str | None = None
    traceparent: str | None = None

    @property
    def live(self) -> bool:
        return self.status is None


def _rescued(rows: Sequence[Any]) -> list[Rescued]:
    return [
        Rescued(
            id=row["id"],
            stream_id=row["stream_id"],
            reason=row["reason"],
            status=Status(row["status"]) if row["status"] else None,
            from_status=Status(row["from_status"]),
            attempts=row["attempts"],
            queue=row["queue"],
            type=row["type"],
            error=row["error"],
            traceparent=row["traceparent"],
        )
        for row in rows
    ]


async def rescue_entries(
    conn: Any, entries: Sequence[tuple[uuid.UUID, str, int]], policy: RescuePolicy
) -> list[Rescued]:
    """Settle reclaimed (job id, stream id, deliveries) entries in one statement.

    Entries whose row no longer points at them are stale and absent from the result.
    """
    if not entries:
        return []
    rows = await conn.fetch(
        RESCUE_ENTRIES,
        *policy.args(),
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2] for e in entries],
    )
    return _rescued(rows)


async def rescue_expired_leases(conn: Any, policy: RescuePolicy, limit: int) -> list[Rescued]:
    """Rescue up to ``limit`` running jobs whose lease lapsed (oldest first)."""
    return _rescued(await conn.fetch(RESCUE_EXPIRED, *policy.args(), limit))


async def rescue_lost_entries(
    conn: Any, entries: Sequence[tuple[uuid.UUID, str]], policy: RescuePolicy
) -> list[Rescued]:
    """Send back to ``pending`` the queued jobs whose (job id, stream id) entry Redis lost."""
    if not entries:
        return []
    rows = await conn.fetch(
        RESCUE_LOST, *policy.args(), [e[0] for e in entries], [e[1] for e in entries]
    )
    return _rescued(rows)


@dataclass(frozen=True)
class QueuedEntry:
    """A queued job and the stream entry its row points at."""

    id: uuid.UUID
    queue: str
    stream_id: str
    created_at: datetime


async def queued_entries(
    conn: Any, older_than: float, after: QueuedEntry | None, limit: int
) -> list[QueuedEntry]:
    """A page of jobs queued for more than ``older_than`` seconds, after ``after``."""
    rows = await conn.fetch(
        QUEUED_ENTRIES,
        older_than,
        after.id if after else _NIL,
        limit,
    )
    return [QueuedEntry(r["id"], r["queue"], r["stream_id"], r["created_at"]) for r in rows]


async def delete_finished(
    conn: Any, statuses: Sequence[Status], older_than: float, limit: int
) -> int:
    """Delete up to ``limit`` jobs in ``statuses`` unchanged for ``older_than`` seconds.

    Their history goes with them, in the same statement. Returns how many were deleted.
    """
    count: int = await conn.fetchval(
        DELETE_FINISHED, [s.value for s in statuses], older_than, limit
    )
    return count
