"""Core transitions: a job's insert (submit) and reading a job back.

Every transition is one conditional ``UPDATE … WHERE status = … RETURNING`` whose statement
also inserts the ``job_events`` rows (a data-modifying CTE), so a state change and its history
commit together or not at all. Functions return what moved; a caller learns it lost a race
from an empty result, never from an exception. The scheduler's transitions live in
:mod:`.dispatch`, the worker's in :mod:`.attempts`.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from taskforge.jobs import Job, uuid7

__all__ = [
    "SubmitResult",
    "get_job",
    "notify_dispatcher",
    "submit",
]


EVENTS_INSERT = """
INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
"""

# Joined into a statement's FROM, this makes its transaction commit without waiting for the
# WAL flush (a local setting lasts to the transaction's end, and the commit reads it). Only
# where something durable later flushes past that commit: the dispatch (the claim's commit)
# and a submit outside a transaction (admin.FLUSH_WAL).
RELAXED_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"


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
    + EVENTS_INSERT
    + """
    SELECT id, NULL, 'pending', 0, 'api', NULL FROM ins
)
SELECT * FROM ins
"""
)


SELECT_BY_KEY = "SELECT * FROM jobs WHERE idempotency_key = $1"


SELECT_JOB = "SELECT * FROM jobs WHERE id = $1"


class SubmitResult(NamedTuple):
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


NOTIFY_DISPATCHER = "SELECT pg_notify('taskforge_jobs', '')"


async def notify_dispatcher(conn: Any) -> None:
    """Wake the dispatcher (LISTEN taskforge_jobs); inside a transaction it fires at commit."""
    await conn.execute(NOTIFY_DISPATCHER)
