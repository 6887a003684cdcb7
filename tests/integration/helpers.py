"""Running the dispatcher and a worker inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from taskforge import lifecycle, store
from taskforge.config import Settings
from taskforge.jobs import TERMINAL_STATUSES, Job
from taskforge.scheduler.dispatcher import Dispatcher, listen
from taskforge.worker.consumer import Worker
from taskforge.worker.registry import Registry, load


class RecordingConnection:
    """A connection that notes every statement sent on it (whitespace collapsed) and, once
    each is answered, awaits ``after`` (say, to read where the WAL has reached)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        statements: list[str] | None = None,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.conn = conn
        self.statements = statements if statements is not None else []
        self.after = after

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.conn, name)
        if name not in ("execute", "fetch", "fetchval", "fetchrow"):
            return attribute

        async def recorded(query: str, *args: Any) -> Any:
            self.statements.append(" ".join(query.split()))
            result = await attribute(query, *args)
            if self.after is not None:
                await self.after()
            return result

        return recorded


@asynccontextmanager
async def running_pipeline(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    registry: Registry | None = None,
    workers: int = 1,
) -> AsyncIterator[list[Worker]]:
    """Dispatcher (with LISTEN) and ``workers`` workers until the block ends."""
    stop = asyncio.Event()
    dispatcher = Dispatcher(
        pool, redis, batch_size=settings.dispatch_batch, poll_interval=settings.poll_interval
    )
    registry = registry or load(())
    consumers = [Worker(pool, redis, registry, settings, f"test-{i}") for i in range(workers)]
    tasks = [
        asyncio.create_task(dispatcher.run(stop)),
        asyncio.create_task(listen(settings.postgres_url, dispatcher, stop)),
        *(asyncio.create_task(w.run(stop)) for w in consumers),
    ]
    try:
        yield consumers
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def job_values(type_: str = "ping", **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "type": type_,
        "payload": {},
        "queue": "default",
        "priority": 0,
        "max_attempts": 5,
        "timeout_seconds": 30.0,
        "run_at": None,
        "delay_seconds": None,
        "idempotency_key": None,
    }
    values.update(overrides)
    return values


async def submit(pool: asyncpg.Pool, type_: str = "ping", **overrides: Any) -> Job:
    async with pool.acquire() as conn:
        result = await lifecycle.submit(conn, job_values(type_, **overrides), None)
    return result.job


async def wait_status(
    pool: asyncpg.Pool, job_id: uuid.UUID, status: str, timeout: float = 20.0
) -> None:
    """Poll until the job has ``status``; fail if it never does within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == status:
                return
        assert time.monotonic() < deadline, f"job never became {status}"
        await asyncio.sleep(0.02)


async def wait_terminal(
    pool: asyncpg.Pool, ids: list[uuid.UUID], timeout: float = 20.0
) -> dict[uuid.UUID, Job]:
    """Poll until every job is terminal; fail with the stragglers' states otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM jobs WHERE id = ANY($1)", ids)
        jobs = {row["id"]: Job.from_row(row) for row in rows}
        if len(jobs) == len(ids) and all(j.status in TERMINAL_STATUSES for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            waiting = {
                str(i): j.status.value for i, j in jobs.items() if j.status not in TERMINAL_STATUSES
            }
            raise AssertionError(f"jobs not terminal after {timeout}s: {waiting}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def explaining_connection(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection configured as the deployables' (:func:`taskforge.store.create_pool`) that
    reports the plan of every statement it runs, nested ones too, as notices (auto_explain);
    the test is skipped where the server lacks auto_explain."""
    own = await store.create_pool(postgres_url, min_size=1, max_size=1)
    try:
        async with own.acquire() as connection:
            try:
                await connection.execute("LOAD 'auto_explain'")
            except asyncpg.PostgresError as exc:
                pytest.skip(f"auto_explain is not available here: {exc}")
            await connection.execute(
                "SET auto_explain.log_min_duration = 0;"
                " SET auto_explain.log_nested_statements = on;"
                " SET auto_explain.log_level = notice"
            )
            yield connection
    finally:
        await own.close()


async def plans_during(
    conn: asyncpg.Connection, call: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> list[str]:
    """The plans auto_explain reported on ``conn`` while ``call`` ran."""
    notices: list[str] = []

    def collect(_: Any, message: Any) -> None:
        notices.append(message.message)

    conn.add_log_listener(collect)
    try:
        await call(conn)
    finally:
        conn.remove_log_listener(collect)
    return notices


async def insert_rows(conn: asyncpg.Connection, count: int, status: str) -> list[Any]:
    """``count`` jobs in ``status``, each with a stream id (s-1, s-2, …); their ids and
    stream ids."""
    return await conn.fetch(
        "INSERT INTO jobs (id, queue, type, max_attempts, timeout_seconds, status, stream_id,"
        " attempts) SELECT gen_random_uuid(), 'default', 'ping', 3, 30, $2,"
        " 's-' || g, CASE WHEN $2 = 'running' THEN 1 ELSE 0 END"
        " FROM generate_series(1, $1) g RETURNING id, stream_id",
        count,
        status,
    )


async def stale_statistics(conn: asyncpg.Connection) -> None:
    """Statistics of a table holding only finished jobs, then a backlog arrives."""
    await insert_rows(conn, 2000, "completed")
    await conn.execute("ANALYZE jobs")


def assert_lookups_by_id(plans: list[str]) -> None:
    """Every plan finds its rows of jobs by id, through the primary key: one probe per batch
    entry (a nested loop, ``id = e.id``), or one scan of the batch's ids (``id = ANY``, an
    index or bitmap scan) hashed against the batch (migration 0015). Never a scan of jobs by
    status, nor a whole index or table, nor the ids rescanned for every entry."""
    assert plans, "auto_explain reported no plan for the statement"
    for plan in plans:
        assert "Merge Join" not in plan and "Seq Scan on jobs" not in plan, plan
        scans = re.findall(
            r"(?:Index Scan using|Bitmap Index Scan on) (jobs_\w+)\b.*\n\s*Index Cond: (.*)", plan
        )
        assert scans, plan
        for index, condition in scans:
            assert index == "jobs_pkey", plan
            if condition.startswith("(id = ANY "):
                # The batch's ids read once: hashed against the batch, not rescanned per entry.
                assert "Nested Loop" not in plan and "Hash Join" in plan, plan
            else:
                assert re.match(r"\(id = \w+\.id\)", condition), plan


@contextlib.contextmanager
def terminated_at_exit(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Terminate a server the test started when the block ends (waiting up to 10 s)."""
    try:
        yield
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def run_taskforge(
    *argv: str, postgres_url: str, cwd: str, redis_url: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``taskforge *argv`` in a process of its own against these stores (and ``env``)."""
    stores = {"TASKFORGE_POSTGRES_URL": postgres_url}
    if redis_url is not None:
        stores["TASKFORGE_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "taskforge", *argv],
        env={**os.environ, **stores, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def job_history(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    """A job's ``job_events`` rows, oldest first: from_status, to_status, actor, error."""
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT from_status, to_status, actor, error FROM job_events WHERE job_id = $1 "
            "ORDER BY id",
            job_id,
        )
    return rows
