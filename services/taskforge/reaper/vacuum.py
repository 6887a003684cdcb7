"""The reaper's VACUUM of ``jobs`` on servers where autovacuum is off.

Checked every ``TASKFORGE_REAPER_INTERVAL`` in a loop of its own, so a long VACUUM never holds
up reclaiming. Where autovacuum runs (the default, and every managed PostgreSQL) it only reads
one row of statistics per round. See :mod:`taskforge.lifecycle.maintenance`.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiohttp import web

from taskforge import lifecycle
from taskforge.resources import POOL, SETTINGS, wait_first

log = logging.getLogger("taskforge.reaper")


class JobsVacuum:
    """Vacuums ``jobs`` when autovacuum is off and it has enough dead rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.warned = False  # "autovacuum is off" is said once per process, not per round

    async def once(self) -> float | None:
        """One check; the seconds the VACUUM took, or None when none ran."""
        async with self.pool.acquire() as conn:
            state = await lifecycle.jobs_table_state(conn)
            if state is None or not lifecycle.needs_vacuum(state):
                return None
            if not self.warned:
                self.warned = True
                log.warning(
                    "autovacuum is off for the jobs table; the reaper vacuums it itself"
                    if state.owner
                    else "autovacuum is off for the jobs table and this role does not own it, "
                    "so the reaper cannot vacuum it: turn autovacuum on, or run the reaper "
                    "as the table's owner (the role that ran the migrations)",
                    extra={"action": "reaper.vacuum.autovacuum_off", "owner": state.owner},
                )
            if not state.owner:
                return None
            seconds = await lifecycle.vacuum_jobs(conn)
        if seconds is not None:
            log.info(
                "jobs vacuumed",
                extra={"action": "reaper.vacuum", "dead": state.dead, "seconds": round(seconds, 3)},
            )
        return seconds


async def vacuum_loop(app: web.Application, stop: asyncio.Event) -> None:
    """Check (and VACUUM when needed) every reaper interval until ``stop``."""
    vacuum = JobsVacuum(app[POOL])
    while not stop.is_set():
        try:
            await vacuum.once()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Upkeep only: the next round tries again; reclaiming is not affected.
            log.warning(
                "vacuum failed", extra={"action": "reaper.vacuum.error", "error": repr(exc)}
            )
        await wait_first(stop.wait(), timeout=app[SETTINGS].reaper_interval)
