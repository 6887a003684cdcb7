"""The worker's transitions: claim a batch, finish a batch, renew leases, hand back.

Every finish and renewal is fenced by ``status = 'running' AND attempts = <claimed attempt>``,
so a worker that lost its lease cannot overwrite what happened since.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from taskforge.jobs import Json, Status, status_of
from taskforge.lifecycle.core import EVENTS_INSERT

__all__ = [
    "ClaimedJob",
    "Finished",
    "Outcome",
    "claim",
    "finish",
    "hand_back",
    "renew_leases",
]


# The columns a worker reads, in ClaimedJob's order (each row becomes one by position): the
# function also returns created_at, which no worker reads, and a row's every column is sent
# and decoded (the function's result is unchanged: a worker of the previous release reads it
# during a rolling upgrade).
CLAIM = """
SELECT c.id, c.queue, c.type, c.payload, c.attempts, c.max_attempts, c.timeout_seconds,
       c.traceparent, c.tracestate, c.stream_id, c.run_at
FROM taskforge_claim($1::uuid[], $2::text[], $3, $4, $5::integer[]) AS c
"""

# A finish is fenced by (status running, attempt): a worker that lost its lease cannot
# overwrite what the reaper or another worker decided. taskforge_finish (migrations 0011,
# 0015) reads its rows through the primary key by id, whatever the statistics say (a hash
# join over every running row made each finish as slow as the fleet), with a plan made once
# per session. So do the claim, the lease renewal and the dispatch's mark-queued.
#
# Only the finishes a worker acts on come back: every one but the completed (a dead job's
# row fills its dead-letter notice), and the completed ones only when it logs each job ($8).
# Every row of a drain of no-op jobs came back, eight columns sent by PostgreSQL and decoded
# by the worker, for a worker at the `warning` log level to drop them all.
FINISH = """
SELECT f.id, f.status, f.attempts, f.queue, f.type, f.last_error, f.traceparent, f.tracestate
FROM taskforge_finish($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                      $6::float8[], $7) AS f
WHERE $8 OR f.status <> 'completed'
"""


# Fenced like the finish; by id whatever the statistics say (migrations 0012, 0015).
RENEW_LEASES = "SELECT * FROM taskforge_renew_leases($1::uuid[], $2::int[], $3)"


HAND_BACK = (
    """
WITH back AS (
    UPDATE jobs j SET status = 'pending', run_at = now(), lease_expires_at = NULL,
        stream_id = NULL, worker = NULL, updated_at = now()
    -- The expected status as a column of the batch, not a constant (see rescue.py).
    FROM unnest($1::uuid[], $2::int[], array_fill('running'::text, ARRAY[cardinality($1::uuid[])]))
         AS r(id, attempt, expected)
    WHERE j.id = r.id AND j.status = r.expected AND j.attempts = r.attempt
    RETURNING j.id, j.attempts
), ev AS (
    """
    + EVENTS_INSERT
    + """
    SELECT id, 'running', 'pending', attempts, $3, $4 FROM back
), wake AS (
    SELECT pg_notify('taskforge_jobs', '') FROM back LIMIT 1
)
SELECT back.id FROM back LEFT JOIN wake ON true
"""
)


class ClaimedJob(NamedTuple):
    """A job a worker now runs under a lease (its fields in :data:`CLAIM`'s column order)."""

    id: uuid.UUID
    queue: str
    type: str
    payload: dict[str, Json]
    attempt: int
    max_attempts: int
    timeout_seconds: float
    traceparent: str | None
    tracestate: str | None
    stream_id: str
    run_at: datetime


async def claim(
    conn: Any,
    entries: Sequence[tuple[uuid.UUID, str]],
    worker: str,
    lease_seconds: float,
    dispatch_locks: Sequence[int] | None = None,
) -> list[ClaimedJob]:
    """Claim every entry whose row is queued with that stream id, in one statement.

    ``dispatch_locks`` are the entries' dispatch-lock keys (the envelope's; 0 for none): a
    claim that missed entries (their dispatch not committed yet) waits for those dispatches
    to end and tries once more.
    """
    if not entries:
        return []
    rows = await conn.fetch(
        CLAIM,
        [job_id for job_id, _ in entries],
        [stream_id for _, stream_id in entries],
        worker,
        lease_seconds,
        list(dispatch_locks) if dispatch_locks is not None else [0] * len(entries),
    )
    return [ClaimedJob._make(row) for row in rows]


class Outcome(NamedTuple):
    """How one attempt ended, as the worker reports it."""

    job_id: uuid.UUID
    attempt: int
    status: Status  # completed, retrying, dead or cancelled
    result_json: str | None = None  # the result, already JSON-encoded (completed only)
    error: str | None = None
    delay: float = 0.0


class Finished(NamedTuple):
    """A finish that took effect."""

    id: uuid.UUID
    status: Status
    attempts: int
    queue: str
    type: str
    last_error: str | None
    traceparent: str | None
    tracestate: str | None


async def finish(
    conn: Any, outcomes: Sequence[Outcome], actor: str, report_completed: bool = True
) -> list[Finished]:
    """Record many outcomes in one statement; the finishes that took effect come back, the
    completed ones only if ``report_completed``. Outcomes whose attempt lost the job are
    skipped."""
    if not outcomes:
        return []
    rows = await conn.fetch(
        FINISH,
        [o.job_id for o in outcomes],
        [o.attempt for o in outcomes],
        [o.status.value for o in outcomes],
        [o.result_json if o.status is Status.COMPLETED else None for o in outcomes],
        [o.error for o in outcomes],
        [o.delay for o in outcomes],
        actor,
        report_completed,
    )
    return [
        Finished(
            id=row["id"],
            status=status_of(row["status"]),
            attempts=row["attempts"],
            queue=row["queue"],
            type=row["type"],
            last_error=row["last_error"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
        )
        for row in rows
    ]


async def renew_leases(
    conn: Any, running: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
) -> dict[uuid.UUID, bool]:
    """Extend the leases of attempts still owned; maps id → cancel requested."""
    if not running:
        return {}
    rows = await conn.fetch(
        RENEW_LEASES, [i for i, _ in running], [a for _, a in running], lease_seconds
    )
    return {row["id"]: row["cancel_requested"] for row in rows}


async def hand_back(
    conn: Any, running: Sequence[tuple[uuid.UUID, int]], actor: str, reason: str
) -> list[uuid.UUID]:
    """Return interrupted attempts to ``pending`` at once (worker shutdown past its grace)."""
    if not running:
        return []
    rows = await conn.fetch(
        HAND_BACK, [i for i, _ in running], [a for _, a in running], actor, reason
    )
    return [row["id"] for row in rows]
