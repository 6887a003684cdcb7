"""Queues as operators see and steer them: stats, pause/resume, and concurrency caps.

A queue exists once it has jobs or settings; its settings row in ``queues`` is created on
first change. A cap limits ``queued + running`` of a queue across every worker: the
dispatcher sends a capped queue's jobs only into the room left under its cap, and holds the
capped queues' settings rows locked while it does, so two scheduler replicas never both
fill the same room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskforge.jobs import Status
from taskforge.lifecycle.dispatch import DueJob

__all__ = [
    "QueueControls",
    "QueueStats",
    "queue_controls",
    "queue_stats",
    "select_due_capped",
    "set_concurrency",
    "set_paused",
]

QUEUE_STATS = """
WITH counts AS (
    SELECT queue, jsonb_object_agg(status, n) AS counts
    FROM (SELECT queue, status, count(*) AS n FROM jobs
          WHERE ($1::text IS NULL OR queue = $1) GROUP BY queue, status) c
    GROUP BY queue
), waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE status IN ('pending', 'retrying') AND run_at <= now()) AS due,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8
               AS oldest_age
    FROM jobs
    WHERE status IN ('pending', 'retrying', 'queued') AND ($1::text IS NULL OR queue = $1)
    GROUP BY queue
), done AS (
    -- updated_at of a terminal row is when it became terminal
    SELECT queue, count(*) AS n FROM jobs
    WHERE status = 'completed' AND updated_at > now() - interval '60 seconds'
      AND ($1::text IS NULL OR queue = $1)
    GROUP BY queue
), names AS (
    SELECT queue AS name FROM counts
    UNION SELECT name FROM queues WHERE ($1::text IS NULL OR name = $1)
)
SELECT names.name, coalesce(q.paused, false) AS paused, q.concurrency, c.counts,
       coalesce(w.due, 0) AS due, coalesce(w.queued, 0) AS queued,
       coalesce(w.oldest_age, 0) AS oldest_age, coalesce(d.n, 0) AS completed_last_minute
FROM names
LEFT JOIN queues q ON q.name = names.name
LEFT JOIN counts c ON c.queue = names.name
LEFT JOIN waiting w ON w.queue = names.name
LEFT JOIN done d ON d.queue = names.name
ORDER BY names.name
"""

SET_PAUSED = """
INSERT INTO queues (name, paused) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()
"""

SET_CONCURRENCY = """
INSERT INTO queues (name, concurrency) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET concurrency = EXCLUDED.concurrency, updated_at = now()
"""

QUEUE_CONTROLS = "SELECT name, paused, concurrency IS NOT NULL AS capped FROM queues"

# Taken before measuring the room: a second dispatcher waits here, and its next statement
# (a fresh snapshot under READ COMMITTED) sees the rows the first one marked queued.
LOCK_CAPPED = "SELECT name FROM queues WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE"

SELECT_DUE_CAPPED = """
SELECT d.*
FROM (
    SELECT q.name, greatest(q.concurrency - (
        SELECT count(*) FROM jobs b
        -- an OR, not IN: queued rows are in jobs_status_id_sparse, running ones in jobs_lease
        WHERE b.queue = q.name AND (b.status = 'queued' OR b.status = 'running')), 0) AS room
    FROM queues q
    WHERE q.name = ANY($1::text[]) AND q.concurrency IS NOT NULL AND NOT q.paused
) r
CROSS JOIN LATERAL (
    SELECT id, queue, type, attempts, priority, timeout_seconds, traceparent, tracestate, status
    FROM jobs j
    WHERE j.queue = r.name AND j.status IN ('pending', 'retrying')
      AND j.run_at <= statement_timestamp()  -- see migration 0013: a transaction begun ahead
    ORDER BY j.priority DESC, j.run_at
    LIMIT least(r.room, $2)
    FOR UPDATE SKIP LOCKED
) d
LIMIT $2
"""


@dataclass(frozen=True)
class QueueStats:
    """A queue's settings and work: jobs per state, backlog, oldest wait, recent throughput."""

    name: str
    paused: bool
    concurrency: int | None
    counts: dict[str, int]
    backlog: int
    oldest_age: float
    completed_last_minute: int

    def to_json(self) -> dict[str, Any]:
        """The queue as the REST API shows it."""
        return {
            "name": self.name,
            "paused": self.paused,
            "concurrency": self.concurrency,
            "counts": self.counts,
            "backlog": self.backlog,
            "oldest_age_seconds": round(self.oldest_age, 3),
            "throughput_per_minute": self.completed_last_minute,
        }


async def queue_stats(conn: Any, name: str | None = None) -> list[QueueStats]:
    """Stats of every known queue (or only ``name``), by name."""
    stats = []
    for row in await conn.fetch(QUEUE_STATS, name):
        counts = {status.value: 0 for status in Status}
        counts.update(row["counts"] or {})
        stats.append(
            QueueStats(
                name=row["name"],
                paused=row["paused"],
                concurrency=row["concurrency"],
                counts=counts,
                backlog=row["due"] + row["queued"],
                oldest_age=max(row["oldest_age"], 0.0),
                completed_last_minute=row["completed_last_minute"],
            )
        )
    return stats


async def set_paused(conn: Any, name: str, paused: bool) -> None:
    """Pause (the dispatcher stops sending its jobs; running ones finish) or resume a queue."""
    await conn.execute(SET_PAUSED, name, paused)


async def set_concurrency(conn: Any, name: str, limit: int | None) -> None:
    """Cap ``queued + running`` of a queue across all workers; None removes the cap."""
    await conn.execute(SET_CONCURRENCY, name, limit)


@dataclass(frozen=True)
class QueueControls:
    """What the dispatcher obeys: queues not to send at all, and queues sent only into room."""

    paused: list[str]
    capped: list[str]  # unpaused queues with a concurrency cap


async def queue_controls(conn: Any) -> QueueControls:
    """Paused and capped queues, read in one query."""
    rows = await conn.fetch(QUEUE_CONTROLS)
    return QueueControls(
        paused=[row["name"] for row in rows if row["paused"]],
        capped=[row["name"] for row in rows if row["capped"] and not row["paused"]],
    )


async def select_due_capped(conn: Any, capped: Sequence[str], limit: int) -> list[DueJob]:
    """Lock due rows of capped queues, at most each queue's room (call inside a transaction)."""
    if not capped or limit <= 0:
        return []
    await conn.execute(LOCK_CAPPED, list(capped))
    rows = await conn.fetch(SELECT_DUE_CAPPED, list(capped), limit)
    return [DueJob.from_row(row) for row in rows]
