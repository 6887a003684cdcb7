#!/usr/bin/env python3
"""Drain throughput of pgqueuer, a PostgreSQL job queue, measured like ``taskforge bench``.

A peer figure for taskforge's batch scenario, on the same PostgreSQL in the same run, so the two
can be compared as a ratio. One run:

1. drops and recreates its own database (``--database``, default ``peer_pgqueuer``) through the
   admin URL, and installs pgqueuer's schema there (``Queries.install()``, the SQL of
   ``pgq install``; durability ``durable`` by default: every table logged, as pgqueuer ships);
2. starts ``--workers`` consumer processes, each a pgqueuer ``QueueManager`` on its own asyncpg
   connection (as pgqueuer's tuning guide recommends for the LISTEN side) with a no-op
   entrypoint, a dequeue batch of ``--batch-size`` and no cap on concurrent tasks, on the event
   loop pgqueuer's own CLI uses (uvloop where installed);
3. once they are up, enqueues ``--jobs`` no-op jobs in batches of ``--enqueue-batch`` (500)
   with ``--enqueue-concurrency`` (4) batch inserts in flight, each batch one
   ``Queries.enqueue`` call with lists, each job carrying a small JSON payload like taskforge's;
4. waits until every job is logged ``successful`` and the queue table is empty, stops the
   consumers (SIGTERM, a clean shutdown that flushes their buffers) and reads the figures.

Drain time comes from PostgreSQL's own clock, as in ``taskforge bench``: pgqueuer writes a row to
``pgqueuer_log`` when a job is enqueued (status ``queued``) and when its completion is written
back (status ``successful``), each stamped ``created = now()``. Drain is the first ``queued`` to
the last ``successful``; throughput is jobs completed over that span. ``--repeat`` runs that many
times, each on a fresh database, and reports the median run (by throughput). The database is
dropped at the end.

Output: one JSON object on stdout (progress and diagnostics go to stderr)::

    {"peer": "pgqueuer", "version": "1.6.0", "jobs": 20000, "workers": 2,
     "drain_seconds": 3.1, "drain_throughput": 6451.6, ...}

Standalone: it imports pgqueuer, asyncpg and the standard library only; it is not part of the
taskforge package, and pgqueuer is not a taskforge dependency (``make bench-peers`` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pgqueuer
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

ENTRYPOINT = "noop"
WATCH_INTERVAL = 0.25  # seconds between completion checks, as taskforge bench
T = TypeVar("T")


def log(message: str) -> None:
    print(f"pgqueuer_drain: {message}", file=sys.stderr, flush=True)


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* on the loop pgqueuer's CLI (``pgq run``) uses: uvloop where it is installed."""
    try:
        from pgqueuer.adapters.cli.cli import asyncio_run
    except ImportError:  # a pgqueuer without that helper: the stdlib loop
        return asyncio.run(coro)
    return asyncio_run(coro)


def database_url(admin_url: str, database: str) -> str:
    """*admin_url* with its database (the URL path) replaced by *database*."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def queries_for(connection: asyncpg.Connection, durability: str) -> Queries:
    """pgqueuer ``Queries`` over one asyncpg connection, with the chosen table durability."""
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment
    from pgqueuer.domain.settings import DBSettings, Durability

    settings = DBSettings(durability=Durability(durability))
    return Queries(pgqueuer.AsyncpgDriver(connection), qbe=QueryBuilderEnvironment(settings))


# --- consumer processes ----------------------------------------------------------------------


def consumer_main(
    url: str,
    batch_size: int,
    max_concurrent_tasks: int | None,
    ready: multiprocessing.synchronize.Event,
) -> None:
    """One worker process: a QueueManager with a no-op entrypoint, until SIGTERM."""
    run_loop(consume(url, batch_size, max_concurrent_tasks, ready))


async def consume(
    url: str,
    batch_size: int,
    max_concurrent_tasks: int | None,
    ready: multiprocessing.synchronize.Event,
) -> None:
    connection = await asyncpg.connect(url)
    qm = QueueManager(Queries(pgqueuer.AsyncpgDriver(connection)))

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, qm.shutdown.set)
    ready.set()
    try:
        await qm.run(
            batch_size=batch_size,
            max_concurrent_tasks=max_concurrent_tasks,
            # Continuous mode, stopped by the parent once the run is counted: drain mode
            # would exit before the first enqueue, the queue being empty at start.
            dequeue_timeout=timedelta(seconds=5),
        )
    finally:
        if not connection.is_closed():
            await connection.close()


# --- one run ---------------------------------------------------------------------------------


async def recreate_database(admin_url: str, database: str, *, create: bool) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()


async def install_schema(url: str, durability: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await queries_for(connection, durability).install()
    finally:
        await connection.close()


async def enqueue_all(url: str, jobs: int, batch: int, concurrency: int) -> float:
    """Enqueue *jobs* in batches, *concurrency* batch inserts in flight; returns seconds taken."""
    run = uuid.uuid4().hex[:8]
    chunks: asyncio.Queue[range] = asyncio.Queue()
    for start in range(0, jobs, batch):
        chunks.put_nowait(range(start, min(start + batch, jobs)))
    connections = [await asyncpg.connect(url) for _ in range(max(concurrency, 1))]

    async def sender(connection: asyncpg.Connection) -> None:
        queries = Queries(pgqueuer.AsyncpgDriver(connection))
        while not chunks.empty():
            chunk = chunks.get_nowait()
            await queries.enqueue(
                [ENTRYPOINT] * len(chunk),
                [json.dumps({"bench": run, "i": i}).encode() for i in chunk],
                [0] * len(chunk),
            )

    started = time.monotonic()
    try:
        await asyncio.gather(*(sender(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    return time.monotonic() - started


async def wait_drained(url: str, jobs: int, timeout: float, workers: list[Any]) -> None:
    """Until *jobs* are logged successful and the queue table is empty."""
    connection = await asyncpg.connect(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(WATCH_INTERVAL)
            done = await connection.fetchval(
                "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
            )
            if done >= jobs and not await connection.fetchval("SELECT count(*) FROM pgqueuer"):
                return
            dead = [p for p in workers if not p.is_alive()]
            if dead:
                raise RuntimeError(f"consumer process exited early (exit code {dead[0].exitcode})")
    finally:
        await connection.close()
    raise TimeoutError(f"jobs did not finish within {timeout:.0f}s")


async def figures(url: str) -> dict[str, Any]:
    """Drain span and counts from pgqueuer_log, on PostgreSQL's clock."""
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT min(created) FILTER (WHERE status = 'queued') AS first,"
            " max(created) FILTER (WHERE status = 'successful') AS last,"
            " count(*) FILTER (WHERE status = 'queued') AS queued,"
            " count(*) FILTER (WHERE status = 'successful') AS completed,"
            " count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')) AS other"
            " FROM pgqueuer_log"
        )
    finally:
        await connection.close()
    return dict(row)


def one_run(args: argparse.Namespace, index: int) -> dict[str, Any]:
    url = database_url(args.postgres_url, args.database)
    run_loop(recreate_database(args.postgres_url, args.database, create=True))
    run_loop(install_schema(url, args.durability))

    ctx = multiprocessing.get_context("spawn")
    max_tasks = args.max_concurrent_tasks or None
    workers = []
    for _ in range(args.workers):
        ready = ctx.Event()
        process = ctx.Process(
            target=consumer_main, args=(url, args.batch_size, max_tasks, ready), daemon=True
        )
        process.start()
        workers.append((process, ready))
    try:
        for _, ready in workers:
            if not ready.wait(timeout=60):
                raise RuntimeError("a consumer process did not start within 60s")
        time.sleep(0.5)  # let each QueueManager reach its LISTEN and first dequeue

        async def drive() -> float:
            processes = [p for p, _ in workers]
            watcher = asyncio.create_task(wait_drained(url, args.jobs, args.timeout, processes))
            try:
                submit = await enqueue_all(
                    url, args.jobs, args.enqueue_batch, args.enqueue_concurrency
                )
            except BaseException:
                watcher.cancel()
                raise
            await watcher
            return submit

        submit_seconds = run_loop(drive())
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: QueueManager shutdown, buffers flushed
        for process, _ in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    got = run_loop(figures(url))
    drain = (got["last"] - got["first"]).total_seconds() if got["first"] and got["last"] else 0.0
    result = {
        "drain_seconds": round(drain, 3),
        "drain_throughput": round(got["completed"] / drain, 1) if drain else 0.0,
        "completed": got["completed"],
        "failed": got["other"],
        "submit_seconds": round(submit_seconds, 3),
        "submit_rate": round(args.jobs / submit_seconds, 1) if submit_seconds else 0.0,
    }
    log(f"run {index + 1}/{args.repeat}: {json.dumps(result)}")
    if got["completed"] != args.jobs:
        raise RuntimeError(f"{got['completed']} of {args.jobs} jobs logged successful")
    return result


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pgqueuer_drain.py",
        description="Peer benchmark: pgqueuer's drain throughput on the given PostgreSQL, "
        "measured as `taskforge bench` measures taskforge's (first enqueue to last completion, "
        "on PostgreSQL's clock, from pgqueuer_log). Creates its own database, enqueues N "
        "no-op jobs in batches while W consumer processes drain them, prints one JSON object "
        "and drops the database.",
        epilog="Example: python bench/peers/pgqueuer_drain.py --repeat 3 > bench/results/peers.json"
        " (needs `pip install 'pgqueuer>=1.6,<2'`; `make bench-peers` does both).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "PEER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL: a role that may create and drop databases (env PEER_POSTGRES_URL)",
    )
    parser.add_argument(
        "--database",
        default="peer_pgqueuer",
        help="database to create for the run; DROPPED if it exists, and again at the end",
    )
    parser.add_argument("--jobs", "-n", type=int, default=20_000, help="jobs per run")
    parser.add_argument("--workers", type=int, default=2, help="consumer processes")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="QueueManager.run batch_size: jobs claimed per dequeue round trip (pgqueuer's "
        "default is 10; its tuning guide says raise it for short jobs)",
    )
    parser.add_argument(
        "--max-concurrent-tasks",
        type=int,
        default=0,
        help="QueueManager.run max_concurrent_tasks per process, at least 2x --batch-size; "
        "0 = no cap (pgqueuer's default)",
    )
    parser.add_argument("--enqueue-batch", type=int, default=500, help="jobs per enqueue call")
    parser.add_argument(
        "--enqueue-concurrency", type=int, default=4, help="batch enqueue calls in flight"
    )
    parser.add_argument(
        "--durability",
        choices=("durable", "balanced", "volatile"),
        default="durable",
        help="pgqueuer table durability: durable = all tables logged (pgqueuer's default)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a run may take to drain"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.workers < 1 or args.repeat < 1 or args.batch_size < 1:
        parser.error("--jobs, --workers, --repeat and --batch-size must be at least 1")
    if args.max_concurrent_tasks and args.max_concurrent_tasks < 2 * args.batch_size:
        parser.error("--max-concurrent-tasks must be 0 or at least twice --batch-size")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        version = pgqueuer.__version__
    except AttributeError:
        from importlib.metadata import version as dist_version

        version = dist_version("pgqueuer")
    runs = []
    try:
        for index in range(args.repeat):
            runs.append(one_run(args, index))
    except (OSError, RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        try:
            run_loop(recreate_database(args.postgres_url, args.database, create=False))
        except (OSError, asyncpg.PostgresError) as exc:
            log(f"could not drop database {args.database}: {exc}")
    runs.sort(key=lambda r: r["drain_throughput"])
    median = runs[len(runs) // 2]
    document = {
        "peer": "pgqueuer",
        "version": version,
        "jobs": args.jobs,
        "workers": args.workers,
        "drain_seconds": median["drain_seconds"],
        "drain_throughput": median["drain_throughput"],
        "repeat": args.repeat,
        "runs_drain_throughput": [r["drain_throughput"] for r in runs],
        "submit_rate": median["submit_rate"],
        "settings": {
            "batch_size": args.batch_size,
            "max_concurrent_tasks": args.max_concurrent_tasks or None,
            "enqueue_batch": args.enqueue_batch,
            "enqueue_concurrency": args.enqueue_concurrency,
            "durability": args.durability,
        },
        "machine": {"cpus": os.cpu_count()},
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
