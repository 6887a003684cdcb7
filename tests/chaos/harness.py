"""A running taskforge of separate processes for chaos tests, and the invariants checked after
each failure:

- every accepted job ends terminal, and completed (none of these jobs should die);
- no job ran twice at the same time (overlap of the recorded runs);
- re-runs only for jobs that were in flight on the failed worker, or during the outage.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from taskforge.embedded import free_port
from tests.conftest import Stores
from tests.e2e.deployables import Deployable, start, wait_ready

# Short timings so that recovery takes seconds: a dead worker's jobs are rescued after the
# visibility timeout (3s) plus at most one reaper interval.
CHAOS_ENV = {
    "TASKFORGE_HANDLERS": "tests.chaos.handlers",
    "TASKFORGE_VISIBILITY_TIMEOUT": "3s",
    "TASKFORGE_REAPER_INTERVAL": "500ms",
    "TASKFORGE_WORKER_CONCURRENCY": "16",
    "TASKFORGE_SHUTDOWN_GRACE": "5s",
    "TASKFORGE_LOG_FORMAT": "console",
    "TASKFORGE_QUEUES": "default,probe",
}
TERMINAL = {"completed", "dead", "cancelled"}


@dataclass
class Run:
    """One execution of a handler, as the handler recorded it."""

    job: str
    attempt: int
    pid: int
    start: float
    end: float | None = None
    cancelled: bool = False


@dataclass
class Cluster:
    """api, scheduler, workers and reapers as processes; what failed, and when."""

    stores: Stores
    tmp: Path
    workers: int = 2
    reapers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Deployable] = field(default_factory=dict)
    failed: dict[int, float] = field(default_factory=dict)  # pid -> when it was SIGKILLed
    stopped: set[str] = field(default_factory=set)  # what the test stopped on purpose

    def __post_init__(self) -> None:
        self.runs_dir = self.tmp / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.api = f"http://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        env = {**CHAOS_ENV, "CHAOS_RUNS_DIR": str(self.runs_dir), **self.env}
        plan = [("api", "api"), ("scheduler", "scheduler")]
        plan += [(f"worker-{i}", "worker") for i in range(self.workers)]
        plan += [(f"reaper-{i}", "reaper") for i in range(self.reapers)]
        for name, command in plan:
            self.procs[name] = start(name, command, self.stores, self.tmp, env, self.http_port)
        await asyncio.gather(*(wait_ready(p.ops_port, 60) for p in self.procs.values()))

    def pid(self, name: str) -> int:
        return self.procs[name].process.pid

    def actor(self, name: str) -> str:
        """The worker's actor in job_events (``worker:<hostname>-<pid>``)."""
        return f"worker:{socket.gethostname()}-{self.pid(name)}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> tuple[float, int]:
        """Send ``sig`` and wait for the exit: when it was sent (monotonic), the exit code."""
        at = time.monotonic()
        if sig == signal.SIGKILL:
            self.failed[self.pid(name)] = at
        self.stopped.add(name)
        self.procs[name].process.send_signal(sig)
        return at, self.procs[name].process.wait(60)

    def exited(self) -> dict[str, int]:
        """Processes that exited although nobody stopped them: name → exit code."""
        return {
            name: code
            for name, p in self.procs.items()
            if (code := p.process.poll()) is not None and name not in self.stopped
        }

    def stop(self) -> dict[str, int]:
        """SIGTERM everything still running; exit codes (-9 for one that had to be killed)."""
        for p in self.procs.values():
            if p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.process.wait(30)
            except subprocess.TimeoutExpired:
                p.process.kill()
                codes[name] = p.process.wait()
        return codes

    async def readiness(self) -> dict[str, int]:
        """Each running deployable's /readyz status (0 when it did not answer)."""

        async def one(port: int) -> int:
            try:
                async with aiohttp.ClientSession() as session:
                    url = f"http://127.0.0.1:{port}/readyz"
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                        return r.status
            except (aiohttp.ClientError, TimeoutError):
                return 0

        names = [n for n, p in self.procs.items() if p.process.poll() is None]
        codes = await asyncio.gather(*(one(self.procs[n].ops_port) for n in names))
        return dict(zip(names, codes, strict=True))

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name} ---\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
            for name, p in self.procs.items()
        )

    # -- jobs -----------------------------------------------------------------------------

    async def submit(self, count: int, seconds: float = 0.5) -> list[str]:
        """Submit ``count`` chaos jobs through the api's batch endpoint."""
        ids: list[str] = []
        async with aiohttp.ClientSession() as session:
            while len(ids) < count:
                chunk = min(500, count - len(ids))
                job = {"type": "chaos.work", "payload": {"seconds": seconds}, "max_attempts": 10}
                async with session.post(
                    f"{self.api}/v1/jobs/batch", json={"jobs": [job] * chunk}
                ) as r:
                    assert r.status == 202, await r.text()
                    ids += [item["job_id"] for item in (await r.json())["results"]]
        return ids

    async def submit_one(self, timeout: float = 60.0) -> tuple[str, float]:
        """POST /v1/jobs until the api accepts it; the id and when it was accepted."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    # Its own queue: it measures the pipeline's recovery, not the backlog.
                    body = {"type": "chaos.work", "payload": {"seconds": 0.1}, "queue": "probe"}
                    async with session.post(f"{self.api}/v1/jobs", json=body) as r:
                        if r.status == 202:
                            return (await r.json())["id"], time.monotonic()
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the api accepted no job"
                await asyncio.sleep(0.1)

    async def jobs(self, ids: list[str], timeout: float = 120.0) -> dict[str, Any]:
        """Wait until every job is terminal; their rows, with when each was seen finished."""
        deadline = time.monotonic() + timeout
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.stores.postgres_url)
                rows = await conn.fetch(
                    "SELECT id::text, status, attempts, last_error,"
                    " extract(epoch FROM clock_timestamp() - finished_at) AS ago"
                    " FROM jobs WHERE id = ANY($1::uuid[])",
                    ids,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                rows = []
            finally:
                if conn is not None:
                    await conn.close()
            if len(rows) == len(ids) and all(r["status"] in TERMINAL for r in rows):
                now = time.monotonic()
                return {r["id"]: {**dict(r), "finished": now - float(r["ago"])} for r in rows}
            if time.monotonic() > deadline:
                waiting = defaultdict(int)
                for r in rows:
                    waiting[r["status"]] += 1
                raise AssertionError(f"not all terminal after {timeout}s: {dict(waiting)}")
            await asyncio.sleep(0.2)

    async def events(self, ids: list[str]) -> list[dict[str, Any]]:
        """The jobs' history; ``at`` on this process's monotonic clock."""
        conn = await asyncpg.connect(self.stores.postgres_url)
        try:
            rows = await conn.fetch(
                "SELECT job_id::text, from_status, to_status, actor, attempt,"
                " extract(epoch FROM clock_timestamp() - at) AS ago FROM job_events"
                " WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, id",
                ids,
            )
        finally:
            await conn.close()
        now = time.monotonic()
        return [{**dict(r), "at": now - float(r["ago"])} for r in rows]

    def runs(self) -> dict[str, list[Run]]:
        """Every recorded run, by job, in start order."""
        found: dict[tuple[str, int, int], Run] = {}
        for path in self.runs_dir.glob("runs-*.jsonl"):
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                key = (rec["job"], rec["attempt"], rec["pid"])
                if rec["event"] == "start":
                    found[key] = Run(rec["job"], rec["attempt"], rec["pid"], rec["t"])
                else:
                    found[key].end, found[key].cancelled = rec["t"], rec["cancelled"]
        by_job: dict[str, list[Run]] = defaultdict(list)
        for run in sorted(found.values(), key=lambda r: r.start):
            by_job[run.job].append(run)
        return by_job


def run_problems(cluster: Cluster, runs: dict[str, list[Run]]) -> list[str]:
    """Runs that never ended on a live worker, and runs of one job that overlapped."""
    problems = []
    for job, job_runs in runs.items():
        ends = []
        for run in job_runs:
            if run.end is None:
                if run.pid not in cluster.failed:
                    problems.append(f"job {job}: run on live pid {run.pid} never ended")
                ends.append(cluster.failed.get(run.pid, float("inf")))
            else:
                ends.append(run.end)
        for previous_end, run in zip(ends, job_runs[1:], strict=False):
            if run.start < previous_end:
                problems.append(f"job {job}: attempt {run.attempt} started before the last ended")
    return problems


def reruns(runs: dict[str, list[Run]]) -> set[str]:
    """Jobs whose handler ran more than once."""
    return {job for job, job_runs in runs.items() if len(job_runs) > 1}


def unfinished_on(events: list[dict[str, Any]], actor: str) -> set[str]:
    """Jobs that ``actor`` claimed and did not complete: in flight when it failed."""
    claimed = {e["job_id"] for e in events if e["to_status"] == "running" and e["actor"] == actor}
    done = {e["job_id"] for e in events if e["to_status"] == "completed" and e["actor"] == actor}
    return claimed - done


async def wait_busy(cluster: Cluster, name: str, at_least: int = 4, timeout: float = 60.0) -> None:
    """Wait until worker ``name`` is running at least ``at_least`` handlers at once."""
    pid = cluster.pid(name)
    deadline = time.monotonic() + timeout
    while True:
        running = [
            r for runs in cluster.runs().values() for r in runs if r.pid == pid and r.end is None
        ]
        if len(running) >= at_least:
            return
        assert time.monotonic() < deadline, f"{name} never ran {at_least} jobs at once"
        await asyncio.sleep(0.05)


def rescued_by_reason(events: list[dict[str, Any]]) -> dict[str, int]:
    """How many transitions the reaper made, as ``from→to``."""
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if e["actor"] == "reaper":
            counts[f"{e['from_status']}→{e['to_status']}"] += 1
    return dict(counts)
