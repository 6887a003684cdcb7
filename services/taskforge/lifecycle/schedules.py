"""Cron schedules as rows: create or replace, read, delete, and the cron loop's due set.

The cron loop takes due schedules ``FOR UPDATE SKIP LOCKED`` (a second scheduler replica
skips them), inserts the tick's jobs with one idempotency key per tick (so even a replica
that somehow saw the same tick twice makes one job), and advances ``next_run_at`` in the same
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskforge.jobs import Json

__all__ = [
    "Schedule",
    "advance_schedules",
    "delete_schedule",
    "due_schedules",
    "get_schedule",
    "list_schedules",
    "put_schedule",
]

# A changed cron or timezone starts from the new next tick; an unchanged one keeps its
# next_run_at, so replacing a schedule's job template never skips or repeats a tick.
PUT_SCHEDULE = """
INSERT INTO schedules (name, cron, timezone, job, catchup, paused, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, job = EXCLUDED.job,
    catchup = EXCLUDED.catchup, paused = EXCLUDED.paused,
    next_run_at = CASE
        WHEN schedules.cron = EXCLUDED.cron AND schedules.timezone = EXCLUDED.timezone
        THEN schedules.next_run_at ELSE EXCLUDED.next_run_at END,
    updated_at = now()
RETURNING *, (xmax = 0) AS inserted
"""

SELECT_SCHEDULE = "SELECT * FROM schedules WHERE name = $1"
LIST_SCHEDULES = "SELECT * FROM schedules ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = $1 RETURNING name"

DUE_SCHEDULES = """
SELECT *, COALESCE($2::timestamptz, now()) AS now FROM schedules
WHERE NOT paused AND next_run_at <= COALESCE($2::timestamptz, now())
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

ADVANCE = """
UPDATE schedules s SET next_run_at = a.next_run_at,
    last_run_at = COALESCE(a.last_run_at, s.last_run_at),
    last_job_id = COALESCE(a.last_job_id, s.last_job_id), updated_at = now()
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::uuid[])
     AS a(name, next_run_at, last_run_at, last_job_id)
WHERE s.name = a.name
"""


@dataclass(frozen=True)
class Schedule:
    """A cron schedule: when (cron in a timezone), what (a job template), and what if late."""

    name: str
    cron: str
    timezone: str
    job: dict[str, Json]
    catchup: str
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        """Build from an asyncpg record of ``schedules``."""
        return cls(
            name=row["name"],
            cron=row["cron"],
            timezone=row["timezone"],
            job=row["job"],
            catchup=row["catchup"],
            paused=row["paused"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            last_job_id=row["last_job_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def to_json(self) -> dict[str, Json]:
        """The schedule as the REST API shows it."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "job": self.job,
            "catchup": self.catchup,
            "paused": self.paused,
            "next_run_at": self.next_run_at.isoformat(),
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last_job_id": str(self.last_job_id) if self.last_job_id else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


async def put_schedule(
    conn: Any,
    name: str,
    cron: str,
    timezone: str,
    job: dict[str, Json],
    catchup: str,
    paused: bool,
    next_run_at: datetime,
) -> tuple[Schedule, bool]:
    """Create or replace a schedule; the stored schedule and whether it was created."""
    row = await conn.fetchrow(PUT_SCHEDULE, name, cron, timezone, job, catchup, paused, next_run_at)
    return Schedule.from_row(row), bool(row["inserted"])


async def get_schedule(conn: Any, name: str) -> Schedule | None:
    """The schedule, or None."""
    row = await conn.fetchrow(SELECT_SCHEDULE, name)
    return Schedule.from_row(row) if row else None


async def list_schedules(conn: Any) -> list[Schedule]:
    """Every schedule, by name."""
    return [Schedule.from_row(row) for row in await conn.fetch(LIST_SCHEDULES)]


async def delete_schedule(conn: Any, name: str) -> bool:
    """Remove a schedule (its jobs stay); False if there was none."""
    return await conn.fetchval(DELETE_SCHEDULE, name) is not None


async def due_schedules(
    conn: Any, limit: int, now: datetime | None = None
) -> tuple[list[Schedule], datetime | None]:
    """Lock up to ``limit`` schedules with a tick due (call inside a transaction).

    Returns them with the time they were judged against (the database's clock unless
    ``now`` is given), or no schedules and None.
    """
    rows = await conn.fetch(DUE_SCHEDULES, limit, now)
    if not rows:
        return [], None
    return [Schedule.from_row(row) for row in rows], rows[0]["now"]


async def advance_schedules(
    conn: Any,
    moves: Sequence[tuple[str, datetime, datetime | None, uuid.UUID | None]],
) -> None:
    """Set (name, next_run_at, last_run_at, last_job_id) of many schedules in one statement."""
    if not moves:
        return
    await conn.execute(
        ADVANCE,
        [m[0] for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
        [m[3] for m in moves],
    )
