"""``taskforge bench``: a load generator against a running api, or ``--embedded`` on its own.

Scenarios: ``batch`` (N jobs through ``POST /v1/jobs/batch``), ``single`` (N jobs through
``POST /v1/jobs`` at concurrency C) and ``trickle`` (a fixed rate, for latency). Figures come
from PostgreSQL's own timestamps (``created_at``, ``started_at``, ``finished_at``), so every
latency is measured on one clock: submit→start and submit→finish percentiles, and drain
throughput from the first insert to the last completion. Resource use (CPU seconds, peak RSS)
is read from /proc for every taskforge deployable on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from taskforge.benchsystem import EmbeddedSystem, ProcessSampler
from taskforge.config import Settings

SCENARIOS = ("batch", "single", "trickle")


@dataclass
class Result:
    """One scenario's figures."""

    scenario: str
    jobs: int
    concurrency: int
    submit_seconds: float
    submit_rate: float
    drain_seconds: float
    drain_throughput: float
    start_latency_ms: dict[str, float]
    finish_latency_ms: dict[str, float]
    completed: int
    resources: dict[str, dict[str, float]] = field(default_factory=dict)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of ``values`` (nearest-rank), in the values' unit."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1]}


class Progress:
    """A one-line progress bar on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def show(self, submitted: int, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.monotonic() - self.started, 1e-6)
        sys.stderr.write(
            f"\r{self.label:<8} [{'#' * filled}{'.' * (width - filled)}] "
            f"submitted {submitted}/{self.total} done {done} ({rate:,.0f}/s)  "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _job(run: str, index: int) -> dict[str, Any]:
    return {"type": "noop", "payload": {"bench": run, "i": index}}


class Bench:
    """Submits through the api and watches completion in PostgreSQL."""

    def __init__(self, api_url: str, postgres_url: str, token: str | None) -> None:
        self.api_url = api_url.rstrip("/")
        self.postgres_url = postgres_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def run(
        self,
        scenario: str,
        jobs: int,
        concurrency: int,
        batch_size: int,
        rate: float,
        sampler: ProcessSampler | None,
    ) -> Result:
        run = uuid.uuid4().hex[:8]
        ids: list[str] = []
        progress = Progress(scenario, jobs)
        conn = await asyncpg.connect(self.postgres_url)
        if sampler:
            sampler.start()
        connector = aiohttp.TCPConnector(limit=max(concurrency, 1) * 2)
        try:
            async with aiohttp.ClientSession(connector=connector, headers=self.headers) as http:
                watcher = asyncio.create_task(self._watch(conn, ids, jobs, progress))
                started = time.monotonic()
                if scenario == "batch":
                    await self._submit_batches(http, run, jobs, concurrency, batch_size, ids)
                elif scenario == "single":
                    await self._submit_singles(http, run, jobs, concurrency, ids)
                else:
                    await self._submit_trickle(http, run, jobs, rate, ids)
                submit_seconds = time.monotonic() - started
                await watcher
            rows = await conn.fetch(
                "SELECT status, EXTRACT(EPOCH FROM started_at - created_at)::float8 AS start,"
                " EXTRACT(EPOCH FROM finished_at - created_at)::float8 AS finish,"
                " created_at, finished_at FROM jobs WHERE id = ANY($1::uuid[])",
                ids,
            )
        finally:
            progress.close()
            await conn.close()
        resources = sampler.stop() if sampler else {}
        completed = [r for r in rows if r["status"] == "completed"]
        first = min((r["created_at"] for r in rows), default=None)
        last = max((r["finished_at"] for r in completed), default=None)
        drain = (last - first).total_seconds() if first and last else 0.0
        return Result(
            scenario=scenario,
            jobs=jobs,
            concurrency=concurrency,
            submit_seconds=round(submit_seconds, 3),
            submit_rate=round(jobs / submit_seconds, 1) if submit_seconds else 0.0,
            drain_seconds=round(drain, 3),
            drain_throughput=round(len(completed) / drain, 1) if drain else 0.0,
            start_latency_ms={
                k: round(v * 1000, 2)
                for k, v in percentiles([r["start"] for r in completed]).items()
            },
            finish_latency_ms={
                k: round(v * 1000, 2)
                for k, v in percentiles([r["finish"] for r in completed]).items()
            },
            completed=len(completed),
            resources=resources,
        )

    async def _post(self, http: aiohttp.ClientSession, path: str, body: Any) -> Any:
        async with http.post(self.api_url + path, json=body) as response:
            if response.status >= 300:
                text = await response.text()
                raise RuntimeError(f"POST {path} answered {response.status}: {text[:300]}")
            return await response.json()

    async def _submit_batches(
        self,
        http: aiohttp.ClientSession,
        run: str,
        jobs: int,
        concurrency: int,
        batch_size: int,
        ids: list[str],
    ) -> None:
        chunks = [list(range(i, min(i + batch_size, jobs))) for i in range(0, jobs, batch_size)]
        queue: asyncio.Queue[list[int]] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)

        async def sender() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                reply = await self._post(
                    http, "/v1/jobs/batch", {"jobs": [_job(run, i) for i in chunk]}
                )
                ids.extend(item["job_id"] for item in reply["results"])

        await asyncio.gather(*(sender() for _ in range(max(concurrency, 1))))

    async def _submit_singles(
        self, http: aiohttp.ClientSession, run: str, jobs: int, concurrency: int, ids: list[str]
    ) -> None:
        counter = iter(range(jobs))

        async def sender() -> None:
            for index in counter:
                ids.append((await self._post(http, "/v1/jobs", _job(run, index)))["id"])

        await asyncio.gather(*(sender() for _ in range(max(concurrency, 1))))

    async def _submit_trickle(
        self, http: aiohttp.ClientSession, run: str, jobs: int, rate: float, ids: list[str]
    ) -> None:
        interval = 1.0 / rate
        start = time.monotonic()
        pending = set()
        for index in range(jobs):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

            async def one(i: int = index) -> None:
                ids.append((await self._post(http, "/v1/jobs", _job(run, i)))["id"])

            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _watch(
        self,
        conn: asyncpg.Connection,
        ids: list[str],
        total: int,
        progress: Progress,
        timeout: float = 600.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if len(ids) < total:
                progress.show(len(ids), 0)
                continue
            # uuid7 ids are time ordered: a range scan on the primary key finds the run.
            low, high = min(ids), max(ids)
            done = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id BETWEEN $1::uuid AND $2::uuid"
                " AND status IN ('completed', 'dead', 'cancelled') AND type = 'noop'",
                low,
                high,
            )
            progress.show(len(ids), done)
            if done >= total:
                return
        raise TimeoutError(f"jobs did not finish within {timeout:.0f}s")


def format_table(results: list[Result]) -> str:
    """The results as an aligned text table."""
    header = (
        "scenario",
        "jobs",
        "conc",
        "submit/s",
        "drain/s",
        "start p50/p95/p99 ms",
        "finish p50/p99 ms",
    )
    lines = [header]
    for r in results:
        s, f = r.start_latency_ms, r.finish_latency_ms
        lines.append(
            (
                r.scenario,
                str(r.jobs),
                str(r.concurrency),
                f"{r.submit_rate:,.0f}",
                f"{r.drain_throughput:,.0f}",
                f"{s['p50']:.1f}/{s['p95']:.1f}/{s['p99']:.1f}",
                f"{f['p50']:.1f}/{f['p99']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in lines]
    for r in results:
        for name, usage in sorted(r.resources.items()):
            out.append(
                f"  {r.scenario:<8} {name:<12} cpu {usage['cpu_seconds']:.2f}s  "
                f"peak rss {usage['peak_rss_mb']:.0f} MB"
            )
    return "\n".join(out)


def add_commands(commands: Any) -> None:
    """Register ``taskforge bench`` on the CLI."""
    parser = commands.add_parser(
        "bench",
        help="load generator: throughput and latency percentiles",
        description="Submit N jobs (type noop) at concurrency C and report submit rate, drain "
        "throughput, submit→start/finish latency percentiles and each deployable's CPU and "
        "peak RSS. Against a running api (--url, with --postgres-url for the figures) or "
        "--embedded (starts `taskforge dev` itself on fresh embedded stores or the "
        "TASKFORGE_*_URL servers).",
    )
    parser.add_argument(
        "--url", default=os.environ.get("TASKFORGE_API_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="where to read the figures (default TASKFORGE_POSTGRES_URL)",
    )
    parser.add_argument("--token", default=os.environ.get("TASKFORGE_API_TOKEN"))
    parser.add_argument(
        "--embedded", action="store_true", help="start the whole system (taskforge dev) for the run"
    )
    parser.add_argument("--workers", type=int, default=1, help="--embedded worker processes")
    parser.add_argument("--api", type=int, default=1, help="--embedded api processes")
    parser.add_argument(
        "--scenarios", default="batch", help=f"comma-separated of {', '.join(SCENARIOS)}, or all"
    )
    parser.add_argument("--jobs", "-n", type=int, default=20_000)
    parser.add_argument(
        "--concurrency", "-c", type=int, default=64, help="requests in flight, single (64)"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=4, help="batch requests in flight (4)"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="trickle jobs per second")
    parser.add_argument("--trickle-jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario (median kept)")
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
        bench = Bench(api_url, postgres_url, args.token)
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
    except (OSError, RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
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
