"""``taskforge bench``: a load generator against a running api, or ``--embedded`` on its own.

Scenarios: ``batch`` (N jobs through ``POST /v1/jobs/batch``), ``single`` (N jobs through
``POST /v1/jobs`` at concurrency C) and ``trickle`` (a fixed rate, for latency). Figures come
from PostgreSQL's own timestamps (``created_at``, ``started_at``, ``finished_at``), so every
latency is measured on one clock: submit→dispatch (the job's first ``queued`` history row,
written after its XADD), submit→start and submit→finish percentiles, and drain
throughput from the first insert to the last completion. Resource use (CPU seconds, peak RSS)
is read from /proc for every taskforge deployable on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from taskforge.argtypes import positive_int
from taskforge.bench.report import Result, format_table, percentiles
from taskforge.bench.runner import Bench
from taskforge.bench.system import EmbeddedSystem, ProcessSampler
from taskforge.config import Settings

__all__ = ["Bench", "Result", "add_commands", "format_table", "percentiles", "run"]

SCENARIOS = ("batch", "single", "trickle")


# The api's own limit on POST /v1/jobs/batch.
MAX_BATCH_SIZE = 1000


def _batch_size(text: str) -> int:
    """An argparse type: a batch request's size, within the api's limit."""
    value = positive_int(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"{value} is more than the api takes in one request ({MAX_BATCH_SIZE})"
        )
    return value


def _positive_rate(text: str) -> float:
    """An argparse type: jobs per second, above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a rate above 0")
    return value


def add_commands(commands: Any) -> None:
    """Register ``taskforge bench`` on the CLI."""
    parser = commands.add_parser(
        "bench",
        help="load generator: throughput and latency percentiles",
        description="Submit N jobs (type noop) at concurrency C and report submit rate, drain "
        "throughput, submit→dispatch/start/finish latency percentiles (dispatch: the job "
        "recorded queued, its stream entry added) and each deployable's CPU and "
        "peak RSS. Against a running api (--url, with --postgres-url for the figures) or "
        "--embedded (starts `taskforge dev` itself on fresh embedded stores or the "
        "TASKFORGE_*_URL servers).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("TASKFORGE_API_URL", "http://127.0.0.1:8080"),
        help="the api to load, plain http (default TASKFORGE_API_URL or http://127.0.0.1:8080; "
        "ignored with --embedded)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="the api's PostgreSQL, where the figures are read (default TASKFORGE_POSTGRES_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("TASKFORGE_API_TOKEN"),
        help="bearer token for an api with tokens configured (default TASKFORGE_API_TOKEN)",
    )
    parser.add_argument(
        "--embedded", action="store_true", help="start the whole system (taskforge dev) for the run"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="--embedded: worker processes (1)"
    )
    parser.add_argument("--api", type=positive_int, default=1, help="--embedded: api processes (1)")
    parser.add_argument(
        "--scenarios", default="batch", help=f"comma-separated of {', '.join(SCENARIOS)}, or all"
    )
    parser.add_argument(
        "--jobs",
        "-n",
        type=positive_int,
        default=20_000,
        help="jobs per batch or single run (20000)",
    )
    parser.add_argument(
        "--concurrency", "-c", type=positive_int, default=64, help="requests in flight, single (64)"
    )
    parser.add_argument(
        "--batch-concurrency", type=positive_int, default=4, help="batch requests in flight (4)"
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=500,
        help=f"jobs per batch request, 1-{MAX_BATCH_SIZE} (500)",
    )
    parser.add_argument(
        "--rate", type=_positive_rate, default=100.0, help="trickle: jobs per second (100)"
    )
    parser.add_argument(
        "--trickle-jobs", type=positive_int, default=1000, help="trickle: jobs per run (1000)"
    )
    parser.add_argument(
        "--full-responses",
        action="store_true",
        help="ask for every submitted job's document back, as a client that reads them "
        "would (by default the submits send `Prefer: return=minimal` and get ids only)",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=1, help="runs per scenario, the median kept (1)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--json-out", type=Path, help="also write the JSON to this file")
    parser.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen scenarios and report."""
    scenarios = SCENARIOS if args.scenarios == "all" else tuple(args.scenarios.split(","))
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        print(
            f"taskforge bench: unknown scenario(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(SCENARIOS)} or all",
            file=sys.stderr,
        )
        return 2
    system = EmbeddedSystem(workers=args.workers, apis=args.api) if args.embedded else None
    try:
        if system:
            system.start()
            api_url, postgres_url = system.api_url, system.postgres_url
        else:
            api_url = args.url
            postgres_url = args.postgres_url or settings.postgres_url
        bench = Bench(api_url, postgres_url, args.token, minimal=not args.full_responses)
        results = []
        for scenario in scenarios:
            runs = []
            for _ in range(max(args.repeat, 1)):
                sampler = ProcessSampler(system.pids() if system else None)
                jobs = args.trickle_jobs if scenario == "trickle" else args.jobs
                concurrency = {"batch": args.batch_concurrency, "trickle": 1}.get(
                    scenario, args.concurrency
                )
                runs.append(
                    asyncio.run(
                        bench.run(scenario, jobs, concurrency, args.batch_size, args.rate, sampler)
                    )
                )
            runs.sort(key=lambda r: r.drain_throughput)
            results.append(runs[len(runs) // 2])
    # EOFError: the api closed a connection mid-reply (asyncio's IncompleteReadError).
    except (OSError, RuntimeError, TimeoutError, EOFError) as exc:
        print(f"taskforge bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if system:
            system.stop()
    document = {"machine": {"cpus": os.cpu_count()}, "results": [asdict(r) for r in results]}
    text = json.dumps(document, indent=2)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text if args.json else format_table(results))
    return 0
