"""Reading jobs for operators: filtered listing with keyset pagination, and job history.

Listing pages over ``id`` newest first: ids are UUIDv7, ordered by the time the api made
them, so the primary key is also the "newest first" index and no index on ``created_at`` has
to be kept up on the hot path (every transition of a job rewrites all of its index entries).
A cursor is the last row's id, so a page costs the same however deep it is, and rows
inserted meanwhile neither shift nor repeat what follows. The WHERE clause is built from the
filters actually given, so each combination gets a plan that can use the matching index.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskforge.jobs import Job, Status

__all__ = ["JobEvent", "JobFilter", "JobPage", "job_events", "list_jobs"]


@dataclass(frozen=True)
class JobFilter:
    """What a listing shows; unset fields match all. Bounds: ``>=`` after, ``<`` before."""

    statuses: tuple[Status, ...] = ()
    queue: str | None = None
    type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    error_contains: str | None = None


@dataclass(frozen=True)
class JobPage:
    """One page of a listing and where the next one starts (None on the last page)."""

    jobs: list[Job]
    next_after: uuid.UUID | None


def _status_in(statuses: Iterable[Status]) -> str:
    """``status`` among ``statuses``, written as constants: the (status, id) index is partial
    (migration 0014) and serves only a WHERE that names the statuses it holds, and an OR of
    equalities lets a listing of several statuses combine the indexes that hold each.

    The values are :class:`Status` members, never client text, so the SQL cannot be
    injected into; a cached plan per combination of statuses is the price.
    """
    terms = [f"status = '{Status(status).value}'" for status in sorted(set(statuses))]
    if not terms:
        raise ValueError("_status_in needs at least one status")
    return "(" + " OR ".join(terms) + ")"


def _where(match: JobFilter, after: uuid.UUID | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        for value in values:
            args.append(value)
            sql = sql.replace("?", f"${len(args)}", 1)
        clauses.append(sql)

    if match.statuses:
        clauses.append(_status_in(match.statuses))
    if match.queue is not None:
        add("queue = ?", match.queue)
    if match.type is not None:
        add("type = ?", match.type)
    if match.created_after is not None:
        add("created_at >= ?", match.created_after)
    if match.created_before is not None:
        add("created_at < ?", match.created_before)
    if match.finished_after is not None:
        add("finished_at >= ?", match.finished_after)
    if match.finished_before is not None:
        add("finished_at < ?", match.finished_before)
    if match.error_contains:
        add("strpos(lower(coalesce(last_error, '')), lower(?)) > 0", match.error_contains)
    if after is not None:
        add("id < ?", after)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def list_jobs(
    conn: Any,
    match: JobFilter,
    limit: int,
    after: uuid.UUID | None = None,
) -> JobPage:
    """Up to ``limit`` jobs matching ``match``, newest first, after the cursor ``after``."""
    where, args = _where(match, after)
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT * FROM jobs{where} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    jobs = [Job.from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return JobPage(jobs, jobs[-1].id if more and jobs else None)


@dataclass(frozen=True)
class JobEvent:
    """One recorded transition of a job."""

    id: int
    at: datetime
    from_status: str | None
    to_status: str
    attempt: int
    actor: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """The event as the REST API shows it."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "from_status": self.from_status,
            "to_status": self.to_status,
            "attempt": self.attempt,
            "actor": self.actor,
            "error": self.error,
        }


SELECT_EVENTS = """
SELECT id, at, from_status, to_status, attempt, actor, error
FROM job_events WHERE job_id = $1 ORDER BY id
"""


async def job_events(conn: Any, job_id: uuid.UUID) -> list[JobEvent]:
    """Every transition of the job, oldest first (empty for an unknown job)."""
    return [
        JobEvent(
            id=row["id"],
            at=row["at"],
            from_status=row["from_status"],
            to_status=row["to_status"],
            attempt=row["attempt"],
            actor=row["actor"],
            error=row["error"],
        )
        for row in await conn.fetch(SELECT_EVENTS, job_id)
    ]
