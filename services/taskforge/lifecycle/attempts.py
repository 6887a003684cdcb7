"""The worker's transitions: claim a batch, finish a batch, renew leases, hand back.

Every finish, renewal and hand-back is fenced by ``status = 'running' AND attempts = <claimed
attempt> AND stream_id = <the entry it was claimed from>``, so a worker that lost its lease
cannot overwrite what happened since, even after a replay reset the attempts (migration 0017).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from taskforge.jobs import Json, Status, status_of
from taskforge.lifecycle.core import EVENTS_INSERT

__all__ = [
    "HANDED_BACK_CANCELLED",
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
FROM taskforge_claim($1::uuid[], $2::text[], $3, $4, $5::integer[], $6) AS c
"""

# A finish is fenced by (status running, attempt, stream id): a worker that lost its lease
# cannot overwrite what the reaper or another worker decided, nor, once a replay reset the
# attempts, the same attempt number of a later run (its entry is another). taskforge_finish
# (migrations 0011, 0015, 0017) reads its rows through the primary key by id, whatever the
# statistics say (a hash join over every running row made each finish as slow as the fleet),
# with a plan made once per session. So do the claim, the lease renewal and the dispatch's
# mark-queued.
#
# Only the finishes a worker acts on come back: every one but the completed (a dead job's
# row fills its dead-letter notice), and the completed ones only when it logs each job ($9).
# Every row of a drain of no-op jobs came back, eight columns sent by PostgreSQL and decoded
# by the worker, for a worker at the `warning` log level to drop them all.
FINISH = """
SELECT f.id, f.status, f.attempts, f.queue, f.type, f.last_error, f.traceparent, f.tracestate
FROM taskforge_finish($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                      $7::float8[], $8) AS f
WHERE $9 OR f.status <> 'completed'
"""


# Fenced like the finish; by id whatever the statistics say (migrations 0012, 0015, 0017).
RENEW_LEASES = "SELECT * FROM taskforge_renew_leases($1::uuid[], $2::int[], $3::text[], $4)"


# A job whose cancel was requested ends ``cancelled`` instead: its worker stopped before
# it could end the job as asked, and sent back to pending it would run again. Fenced like the
# finish (the stream id too: a replayed job's attempt 1 is not the one this worker held).
HAND_BACK = (
    """
WITH back AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'pending' END,
        run_at = CASE WHEN j.cancel_requested THEN j.run_at ELSE now() END,
        last_error = CASE WHEN j.cancel_requested THEN $6 ELSE j.last_error END,
        finished_at = CASE WHEN j.cancel_requested THEN now() ELSE j.finished_at END,
        worker = CASE WHEN j.cancel_requested THEN j.worker END,
        lease_expires_at = NULL, stream_id = NULL, updated_at = now()
    -- The expected status as a column of the batch, not a constant (see rescue.py).
    FROM unnest($1::uuid[], $2::int[], $3::text[],
                array_fill('running'::text, ARRAY[cardinality($1::uuid[])]))
         AS r(id, attempt, stream_id, expected)
    WHERE j.id = r.id AND j.status = r.expected AND j.attempts = r.attempt
      AND j.stream_id = r.stream_id
    RETURNING j.id, j.attempts, j.status
), ev AS (
    """
    + EVENTS_INSERT
    + """
    SELECT id, 'running', status, attempts, $4,
           CASE WHEN status = 'cancelled' THEN $6 ELSE $5 END
    FROM back
), wake AS (
    SELECT pg_notify('taskforge_jobs', '') FROM back WHERE status = 'pending' LIMIT 1
)
SELECT back.id, back.status FROM back LEFT JOIN wake ON true
"""
)

HANDED_BACK_CANCELLED = "cancelled on request; the worker shut down before the job ended"


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
    again: bool = False,
) -> list[ClaimedJob]:
    """Claim every entry whose row is queued with that stream id, in one statement.

    ``dispatch_locks`` are the entries' dispatch-lock keys (the envelope's; 0 for none): a
    claim that missed entries (their dispatch not committed yet) waits for those dispatches
    to end and tries once more.

    With ``again`` (the same entries, after a claim that raised), an entry whose row
    ``worker`` already runs from that very entry comes back as well, with the same attempt and
    no new history, its lease renewed: the claim whose reply was lost took it (migration
    0017). Without, such an entry is stale, as an entry Redis delivered twice must be.
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
        again,
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
    conn: Any,
    finishes: Sequence[tuple[Outcome, str]],
    actor: str,
    report_completed: bool = True,
) -> list[Finished]:
    """Record many outcomes, each with the stream id of the entry its attempt was claimed
    from, in one statement; the finishes that took effect come back, the completed ones only
    if ``report_completed``. Outcomes whose attempt lost the job are skipped."""
    if not finishes:
        return []
    outcomes = [o for o, _ in finishes]
    rows = await conn.fetch(
        FINISH,
        [o.job_id for o in outcomes],
        [o.attempt for o in outcomes],
        [stream_id for _, stream_id in finishes],
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
    conn: Any, running: Sequence[tuple[uuid.UUID, int, str]], lease_seconds: float
) -> dict[uuid.UUID, bool]:
    """Extend the leases of (job id, attempt, stream id) attempts still owned; maps id →
    cancel requested."""
    if not running:
        return {}
    rows = await conn.fetch(
        RENEW_LEASES,
        [i for i, _, _ in running],
        [a for _, a, _ in running],
        [s for _, _, s in running],
        lease_seconds,
    )
    return {row["id"]: row["cancel_requested"] for row in rows}


async def hand_back(
    conn: Any, running: Sequence[tuple[uuid.UUID, int, str]], actor: str, reason: str
) -> dict[uuid.UUID, Status]:
    """End interrupted (job id, attempt, stream id) attempts at once (worker shutdown past
    its grace): back to ``pending`` with ``reason``, or ``cancelled`` if a cancel was
    requested. Maps each attempt still owned to the status it went to."""
    if not running:
        return {}
    rows = await conn.fetch(
        HAND_BACK,
        [i for i, _, _ in running],
        [a for _, a, _ in running],
        [s for _, _, s in running],
        actor,
        reason,
        HANDED_BACK_CANCELLED,
    )
    return {row["id"]: status_of(row["status"]) for row in rows}
