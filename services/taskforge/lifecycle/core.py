"""Core transitions: submit, dispatch, claim, finish, leases and hand-back.

Every transition is one conditional ``UPDATE … WHERE status = … RETURNING`` whose statement
also inserts the ``job_events`` rows (a data-modifying CTE), so a state change and its history
commit together or not at all. Functions return what moved; a caller learns it lost a race
from an empty result, never from an exception.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskforge.jobs import Job, Json, Status

__all__ = [
    "ClaimedJob",
    "DueJob",
    "Finished",
    "Outcome",
    "QueueBacklog",
    "SubmitResult",
    "claim",
    "dead_count",
    "finish",
    "get_job",
    "hand_back",
    "mark_queued",
    "notify_dispatcher",
    "paused_queues",
    "queue_backlogs",
    "registered_queues",
    "renew_leases",
    "seconds_until_next_due",
    "select_due",
    "submit",
]

_EVENTS_FROM = """
INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
"""

INSERT_JOB = (
    """
WITH ins AS (
    INSERT INTO jobs (id, queue, type, payload, priority, max_attempts, timeout_seconds, run_at,
                      idempotency_key, request_hash, traceparent, tracestate)
    VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now() + make_interval(secs => $9)),
            $10, $11, $12, $13)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), ev AS (
    """
    + _EVENTS_FROM
    + """
    SELECT id, NULL, 'pending', 0, 'api', NULL FROM ins
)
SELECT * FROM ins
"""
)

SELECT_BY_KEY = "SELECT * FROM jobs WHERE idempotency_key = $1"
SELECT_JOB = "SELECT * FROM jobs WHERE id = $1"

# Rows the dispatcher may send now, highest priority first, locked so that another
# scheduler replica skips them instead of sending them twice.
SELECT_DUE = """
SELECT id, queue, type, attempts, priority, timeout_seconds, traceparent, tracestate, status
FROM jobs
WHERE status IN ('pending', 'retrying') AND run_at <= now()
  AND queue <> ALL($2::text[])
ORDER BY priority DESC, run_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM (min(run_at) - now()))::float8
FROM jobs WHERE status IN ('pending', 'retrying') AND queue <> ALL($1::text[])
"""

MARK_QUEUED = (
    """
WITH moved AS (
    UPDATE jobs j SET status = 'queued', stream_id = m.stream_id, updated_at = now()
    FROM unnest($1::uuid[], $2::text[]) AS m(id, stream_id), jobs old
    WHERE j.id = m.id AND old.id = m.id AND j.status IN ('pending', 'retrying')
    RETURNING j.id, j.attempts, old.status AS from_status
), ev AS (
    """
    + _EVENTS_FROM
    + """
    SELECT id, from_status, 'queued', attempts, 'scheduler', NULL FROM moved
)
-- The dispatch commits without waiting for its WAL flush: if PostgreSQL loses it, the rows
-- are pending again and their stream entries stale (acked unrun); a claim, committed
-- durably, flushes the WAL up to and past this dispatch. Nothing can run on a lost dispatch.
SELECT id FROM moved, (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
"""
)

# The claim is fenced by the stream id: an entry whose row is not queued with this very
# id is stale (re-dispatched, cancelled, rescued) and must be acked without running.
# taskforge_claim (migration 0002) first waits for a dispatcher still holding the rows.
CLAIM = "SELECT * FROM taskforge_claim($1::uuid[], $2::text[], $3, $4)"

# A finish is fenced by (status running, attempt): a worker that lost its lease cannot
# overwrite what the reaper or another worker decided.
FINISH = (
    """
WITH done AS (
    UPDATE jobs j SET status = o.status,
        result = CASE WHEN o.status = 'completed' THEN o.result::jsonb ELSE j.result END,
        last_error = COALESCE(o.error, j.last_error),
        run_at = CASE WHEN o.status = 'retrying' THEN now() + make_interval(secs => o.delay)
                      ELSE j.run_at END,
        finished_at = CASE WHEN o.status IN ('completed', 'dead', 'cancelled') THEN now() END,
        lease_expires_at = NULL, stream_id = NULL, updated_at = now()
    FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[])
         AS o(id, attempt, status, result, error, delay)
    WHERE j.id = o.id AND j.status = 'running' AND j.attempts = o.attempt
    RETURNING j.id, j.status, j.attempts, j.queue, j.type, j.last_error, j.traceparent,
              j.tracestate, o.error
), ev AS (
    """
    + _EVENTS_FROM
    + """
    SELECT id, 'running', status, attempts, $7, error FROM done
)
SELECT id, status, attempts, queue, type, last_error, traceparent, tracestate FROM done
"""
)

RENEW_LEASES = """
UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS r(id, attempt)
WHERE j.id = r.id AND j.status = 'running' AND j.attempts = r.attempt
RETURNING j.id, j.cancel_requested
"""

HAND_BACK = (
    """
WITH back AS (
    UPDATE jobs j SET status = 'pending', run_at = now(), lease_expires_at = NULL,
        stream_id = NULL, worker = NULL, updated_at = now()
    FROM unnest($1::uuid[], $2::int[]) AS r(id, attempt)
    WHERE j.id = r.id AND j.status = 'running' AND j.attempts = r.attempt
    RETURNING j.id, j.attempts
), ev AS (
    """
    + _EVENTS_FROM
    + """
    SELECT id, 'running', 'pending', attempts, $3, $4 FROM back
), wake AS (
    SELECT pg_notify('taskforge_jobs', '') FROM back LIMIT 1
)
SELECT back.id FROM back LEFT JOIN wake ON true
"""
)


@dataclass(frozen=True)
class SubmitResult:
    """The stored job and whether this call created it."""

    job: Job
    created: bool
    request_hash: str | None = None


async def submit(
    conn: Any,
    spec_values: dict[str, Any],
    request_hash: str | None,
) -> SubmitResult:
    """Insert a pending job; with an idempotency key, return the existing job instead.

    ``spec_values`` holds resolved fields: queue, type, payload, priority, max_attempts,
    timeout_seconds, run_at (datetime or None), delay_seconds, idempotency_key, traceparent,
    tracestate. The caller compares ``request_hash`` of an existing job with its own.
    """
    from taskforge.jobs import uuid7

    for _ in range(3):
        row = await conn.fetchrow(
            INSERT_JOB,
            uuid7(),
            spec_values["queue"],
            spec_values["type"],
            spec_values["payload"],
            spec_values["priority"],
            spec_values["max_attempts"],
            spec_values["timeout_seconds"],
            spec_values["run_at"],
            float(spec_values.get("delay_seconds") or 0.0),
            spec_values["idempotency_key"],
            request_hash,
            spec_values.get("traceparent"),
            spec_values.get("tracestate"),
        )
        if row is not None:
            return SubmitResult(Job.from_row(row), created=True, request_hash=request_hash)
        existing = await conn.fetchrow(SELECT_BY_KEY, spec_values["idempotency_key"])
        if existing is not None:
            return SubmitResult(
                Job.from_row(existing), created=False, request_hash=existing["request_hash"]
            )
        # The conflicting row was deleted between our two statements (retention); try again.
    raise RuntimeError("idempotency key kept conflicting with a vanishing job")


async def get_job(conn: Any, job_id: uuid.UUID) -> Job | None:
    """The job, or None."""
    row = await conn.fetchrow(SELECT_JOB, job_id)
    return Job.from_row(row) if row else None


@dataclass(frozen=True)
class DueJob:
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


async def select_due(conn: Any, limit: int, paused: Sequence[str]) -> list[DueJob]:
    """Lock up to ``limit`` due rows (call inside a transaction)."""
    rows = await conn.fetch(SELECT_DUE, limit, list(paused))
    return [
        DueJob(
            id=row["id"],
            queue=row["queue"],
            type=row["type"],
            attempt=row["attempts"] + 1,
            priority=row["priority"],
            timeout_seconds=row["timeout_seconds"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
            status=Status(row["status"]),
        )
        for row in rows
    ]


async def seconds_until_next_due(conn: Any, paused: Sequence[str]) -> float | None:
    """Seconds until the earliest waiting row is due (negative when overdue), None if none."""
    value: float | None = await conn.fetchval(NEXT_DUE, list(paused))
    return value


async def mark_queued(conn: Any, ids: Sequence[uuid.UUID], stream_ids: Sequence[str]) -> int:
    """Record that the locked rows now have stream entries; returns how many moved."""
    rows = await conn.fetch(MARK_QUEUED, list(ids), list(stream_ids))
    return len(rows)


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker now runs under a lease."""

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
    created_at: datetime
    run_at: datetime


async def claim(
    conn: Any,
    entries: Sequence[tuple[uuid.UUID, str]],
    worker: str,
    lease_seconds: float,
) -> list[ClaimedJob]:
    """Claim every entry whose row is queued with that stream id, in one statement."""
    if not entries:
        return []
    rows = await conn.fetch(
        CLAIM,
        [job_id for job_id, _ in entries],
        [stream_id for _, stream_id in entries],
        worker,
        lease_seconds,
    )
    return [
        ClaimedJob(
            id=row["id"],
            queue=row["queue"],
            type=row["type"],
            payload=row["payload"],
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            timeout_seconds=row["timeout_seconds"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
            stream_id=row["stream_id"],
            created_at=row["created_at"],
            run_at=row["run_at"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the worker reports it."""

    job_id: uuid.UUID
    attempt: int
    status: Status  # completed, retrying, dead or cancelled
    result_json: str | None = None  # the result, already JSON-encoded (completed only)
    error: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Finished:
    """A finish that took effect."""

    id: uuid.UUID
    status: Status
    attempts: int
    queue: str
    type: str
    last_error: str | None
    traceparent: str | None
    tracestate: str | None


async def finish(conn: Any, outcomes: Sequence[Outcome], actor: str) -> list[Finished]:
    """Record many outcomes in one statement; outcomes whose attempt lost the job are skipped."""
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
    )
    return [
        Finished(
            id=row["id"],
            status=Status(row["status"]),
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


PAUSED_QUEUES = "SELECT name FROM queues WHERE paused"

NOTIFY_DISPATCHER = "SELECT pg_notify('taskforge_jobs', '')"
REGISTERED_QUEUES = "SELECT name FROM queues"


async def registered_queues(conn: Any) -> list[str]:
    """Queues with a row in ``queues`` (paused, capped or otherwise configured)."""
    return [row["name"] for row in await conn.fetch(REGISTERED_QUEUES)]


async def notify_dispatcher(conn: Any) -> None:
    """Wake the dispatcher (LISTEN taskforge_jobs); inside a transaction it fires at commit."""
    await conn.execute(NOTIFY_DISPATCHER)


QUEUE_BACKLOG = """
SELECT queue,
       count(*) FILTER (WHERE status IN ('pending', 'retrying') AND run_at <= now()) AS due,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
           WHERE status IN ('pending', 'retrying', 'queued') AND run_at <= now()))::float8
           AS oldest_age
FROM jobs
WHERE status IN ('pending', 'retrying', 'queued', 'running')
GROUP BY queue
"""

DEAD_COUNT = "SELECT count(*) FROM jobs WHERE status = 'dead'"


async def paused_queues(conn: Any) -> list[str]:
    """Names of queues an operator paused: the dispatcher does not send their jobs."""
    return [row["name"] for row in await conn.fetch(PAUSED_QUEUES)]


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
