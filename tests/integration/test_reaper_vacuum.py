"""The reaper vacuums jobs itself where autovacuum is off, and leaves it alone where it is on."""

from __future__ import annotations

import uuid

import asyncpg

from taskforge import lifecycle
from taskforge.lifecycle.maintenance import VACUUM_LOCK_KEY
from taskforge.reaper.vacuum import JobsVacuum
from tests.integration.helpers import submit


async def _churn(pool: asyncpg.Pool, jobs: int = 60) -> None:
    """Leave dead row versions behind, as transitions do."""
    for _ in range(jobs):
        await submit(pool, "ping")
    async with pool.acquire() as conn:
        for _ in range(3):
            await conn.execute("UPDATE jobs SET updated_at = now()")
        await conn.execute("SELECT pg_stat_force_next_flush()")


async def _state(pool: asyncpg.Pool) -> lifecycle.JobsTableState:
    async with pool.acquire() as conn:
        state = await lifecycle.jobs_table_state(conn)
    assert state is not None
    return state


async def test_jobs_with_autovacuum_disabled_are_vacuumed_once_dead_rows_pile_up(pool):
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
    try:
        await _churn(pool)
        state = await _state(pool)
        assert not state.autovacuum and state.dead >= 180
        vacuum = JobsVacuum(pool)
        assert await vacuum.once() is None  # 180 dead rows: under the 1,000 threshold
        assert lifecycle.needs_vacuum(state, min_dead=100)
        async with pool.acquire() as conn:
            assert await lifecycle.vacuum_jobs(conn) is not None
            await conn.execute("SELECT pg_stat_force_next_flush()")
        assert (await _state(pool)).dead == 0
    finally:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE jobs RESET (autovacuum_enabled)")


async def test_a_reaper_skips_the_vacuum_another_one_is_running(pool):
    other = await pool.acquire()
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", VACUUM_LOCK_KEY)
        async with pool.acquire() as conn:
            assert await lifecycle.vacuum_jobs(conn) is None
        await other.execute("SELECT pg_advisory_unlock($1)", VACUUM_LOCK_KEY)
        async with pool.acquire() as conn:
            assert await lifecycle.vacuum_jobs(conn) is not None
    finally:
        await pool.release(other)


async def test_where_autovacuum_runs_the_reaper_never_vacuums(pool):
    async with pool.acquire() as conn:
        server_autovacuum = await conn.fetchval("SELECT current_setting('autovacuum')::bool")
    await _churn(pool)
    state = await _state(pool)
    assert state.autovacuum is server_autovacuum
    if server_autovacuum:
        assert not lifecycle.needs_vacuum(state, min_dead=0, dead_fraction=0.0)
    many_dead = lifecycle.JobsTableState(autovacuum=True, live=10, dead=10**9)
    assert not lifecycle.needs_vacuum(many_dead)


async def test_a_role_that_does_not_own_jobs_does_not_try_to_vacuum(pool, stores):
    """VACUUM by a non-owner only warns in PostgreSQL's log: the reaper says why, once."""
    role = f"taskforge_test_reader_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"GRANT SELECT ON jobs TO {role}")
        await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
    try:
        await _churn(pool, jobs=400)
        reader = await asyncpg.connect(stores.postgres_url, user=role)
        try:
            state = await lifecycle.jobs_table_state(reader)
        finally:
            await reader.close()
        assert state is not None and not state.owner and lifecycle.needs_vacuum(state)
        assert (await _state(pool)).owner
    finally:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE jobs RESET (autovacuum_enabled)")
            await conn.execute(f"REVOKE ALL ON jobs FROM {role}")
            await conn.execute(f"DROP ROLE {role}")
