#!/usr/bin/env python3
"""taskforge's drain throughput as a ratio of a peer's, the two alternated on one machine.

A shared VM's speed drifts by a quarter between minutes, so a taskforge figure and a peer
figure taken apart cannot be compared. Each round here runs, back to back on the same
PostgreSQL server and Redis:

* ``taskforge bench --embedded --scenarios batch`` (api, scheduler, workers and reaper as
  separate processes, jobs submitted through ``/v1/jobs/batch``) on a fresh database
  ``--database`` of that server and a flushed Redis db (``--redis-url``: give it a db index
  of its own, it is emptied before each round);
* ``bench/peers/pgqueuer_drain.py --repeat 1`` (its own database on the same server), once
  for each of ``--peer-batch-sizes``: by default pgqueuer as it ships (``batch_size`` 10, a
  dequeue round trip per ten jobs, as the peer figures of issue 9 were taken) and as its
  tuning guide advises for short jobs (100).

Rounds rotate which system goes first. The report holds each round's figures and ratios,
each system's median, and the ratio of the medians against each pgqueuer setting. JSON on
stdout; progress on stderr.

Needs pgqueuer installed (``make bench-peers`` does it; ``make bench-compare`` runs this).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis

# Same directory: the peer's own database helpers (run as a script, it is on sys.path).
from pgqueuer_drain import database_url, recreate_database

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an admin URL of the server both systems use (databases are created there)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="taskforge's Redis; its db is FLUSHED before every round",
    )
    parser.add_argument("--database", default="taskforge_compare", help="taskforge's database")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each system")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--peer-batch-sizes",
        default="10,100",
        help="pgqueuer dequeue batch sizes to run each round, comma-separated (default 10,100: "
        "pgqueuer's default and its tuning guide's advice for short jobs)",
    )
    args = parser.parse_args(argv)
    try:
        args.peer_batch_sizes = [int(size) for size in args.peer_batch_sizes.split(",")]
    except ValueError:
        parser.error("--peer-batch-sizes: comma-separated whole numbers, e.g. 10,100")
    if not args.peer_batch_sizes or min(args.peer_batch_sizes) < 1:
        parser.error("--peer-batch-sizes: each at least 1")
    return args


def log(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr, flush=True)


def run_json(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a benchmark command; its stdout is one JSON document."""
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}")
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def taskforge_round(args: argparse.Namespace) -> float:
    asyncio.run(recreate_database(args.postgres_url, args.database, create=True))
    redis.Redis.from_url(args.redis_url).flushdb()
    env = {
        **os.environ,
        "TASKFORGE_POSTGRES_URL": database_url(args.postgres_url, args.database),
        "TASKFORGE_REDIS_URL": args.redis_url,
    }
    command = [sys.executable, "-m", "taskforge", "bench", "--embedded", "--json"]
    command += ["--workers", str(args.workers), "--scenarios", "batch", "--jobs", str(args.jobs)]
    result = run_json(command, env)["results"][0]
    if result["completed"] != args.jobs:
        raise RuntimeError(f"taskforge completed {result['completed']} of {args.jobs} jobs")
    return float(result["drain_throughput"])


def peer_round(args: argparse.Namespace, batch_size: int) -> float:
    command = [sys.executable, str(HERE / "pgqueuer_drain.py"), "--repeat", "1"]
    command += ["--postgres-url", args.postgres_url, "--batch-size", str(batch_size)]
    command += ["--jobs", str(args.jobs), "--workers", str(args.workers)]
    return float(run_json(command, dict(os.environ))["drain_throughput"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Each system's name in the report, and the call that runs one drain of it.
    runners: dict[str, Callable[[], float]] = {
        "taskforge": functools.partial(taskforge_round, args)
    }
    for size in args.peer_batch_sizes:
        runners[f"pgqueuer_b{size}"] = functools.partial(peer_round, args, size)
    systems = list(runners)
    rounds: list[dict[str, float]] = []
    try:
        for index in range(args.rounds):
            # Rotate who goes first: a drift within a round then favours no one.
            shift = index % len(systems)
            figures: dict[str, float] = {}
            for system in systems[shift:] + systems[:shift]:
                figures[system] = runners[system]()
                log(f"round {index + 1}/{args.rounds}: {system} {figures[system]:,.0f} jobs/s")
            for peer in systems[1:]:
                figures[f"ratio_{peer}"] = round(figures["taskforge"] / figures[peer], 3)
            rounds.append(figures)
    except (OSError, RuntimeError, ValueError, asyncpg.PostgresError, redis.RedisError) as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        asyncio.run(recreate_database(args.postgres_url, args.database, create=False))
    medians = {system: statistics.median(r[system] for r in rounds) for system in systems}
    document = {
        "jobs": args.jobs,
        "workers": args.workers,
        "rounds": rounds,
        "medians": medians,
        "ratio_of_medians": {
            peer: round(medians["taskforge"] / medians[peer], 3) for peer in systems[1:]
        },
        "machine": {"cpus": os.cpu_count()},
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
