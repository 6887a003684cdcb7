"""A submit outside a transaction is visible before its WAL flush and returns after it.

The insert commits with ``synchronous_commit`` off, so the dispatcher can start on the job
while the fsync runs; ``submit_batch`` then waits for a flush that covers the insert before
it returns, so no caller answers for a job a crash could still lose. Inside a caller's
transaction nothing changes: the caller's commit is the durable one.
"""

from __future__ import annotations

import asyncpg

from taskforge import lifecycle
from taskforge.lifecycle.admin import FLUSH_WAL
from tests.integration.helpers import RecordingConnection, job_values


class WalRecording(RecordingConnection):
    """Notes, after each statement, the WAL position the server has reached."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__(conn, after=self._note_position)
        self.written_upto: list[int] = []

    async def _note_position(self) -> None:
        self.written_upto.append(await _lsn(self.conn, "pg_current_wal_insert_lsn()"))


async def _lsn(conn: asyncpg.Connection, function: str) -> int:
    value: int = await conn.fetchval(f"SELECT {function} - '0/0'::pg_lsn")
    return int(value)


async def test_a_submit_returns_only_after_a_flush_that_covers_its_insert(pool):
    async with pool.acquire() as conn:
        recording = WalRecording(conn)
        results = await lifecycle.submit_batch(
            recording, [job_values(), job_values()], [None, None]
        )
        flushed = await _lsn(conn, "pg_current_wal_flush_lsn()")
        assert await conn.fetchval("SHOW synchronous_commit") == "on"  # a statement's own
    assert all(r.created for r in results)
    assert recording.statements[-1] == FLUSH_WAL
    insert_committed = recording.written_upto[0]
    assert flushed >= insert_committed


async def test_existing_jobs_read_for_taken_keys_wait_for_the_flush_too(pool):
    """Another request may have inserted the job a moment ago, not yet flushed."""
    async with pool.acquire() as conn:
        await lifecycle.submit_batch(conn, [job_values(idempotency_key="taken-key")], ["h"])
        recording = WalRecording(conn)
        results = await lifecycle.submit_batch(
            recording, [job_values(idempotency_key="taken-key")], ["h"]
        )
    assert [r.created for r in results] == [False]
    assert recording.statements[-1] == FLUSH_WAL


async def test_inside_a_transaction_the_callers_commit_stays_durable(pool):
    async with pool.acquire() as conn:
        recording = WalRecording(conn)
        async with conn.transaction():
            await lifecycle.submit_batch(recording, [job_values()], [None])
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    assert FLUSH_WAL not in recording.statements
    assert all("synchronous_commit" not in statement for statement in recording.statements)
