"""Running a scenario: submit through the api, watch completion in PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import asyncpg

from taskforge.bench.http import Connection
from taskforge.bench.report import Result, percentiles_ms
from taskforge.bench.system import ProcessSampler


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


class Connections:
    """Keep-alive connections to the api, one per request in flight, reused."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    async def post(self, path: str, body: Any) -> Any:
        connection = self._idle.pop() if self._idle else self._open()
        try:
            reply = await connection.post(path, body)
        except BaseException:
            connection.close()
            raise
        self._idle.append(connection)
        return reply

    def _open(self) -> Connection:
        connection = Connection(self.url, self.headers)
        self._all.append(connection)
        return connection

    def close(self) -> None:
        for connection in self._all:
            connection.close()


# Each job's figures on PostgreSQL's clock. Dispatched is the first history row that moved it
# to queued (job_events.at: the dispatch's statement time, after its XADD).
FIGURES = """
SELECT j.status,
       EXTRACT(EPOCH FROM (SELECT min(e.at) FROM job_events e
                           WHERE e.job_id = j.id AND e.to_status = 'queued')
                          - j.created_at)::float8 AS dispatch,
       EXTRACT(EPOCH FROM j.started_at - j.created_at)::float8 AS start,
       EXTRACT(EPOCH FROM j.finished_at - j.created_at)::float8 AS finish,
       j.created_at, j.finished_at
FROM jobs j WHERE j.id = ANY($1::uuid[])
"""


class Bench:
    """Submits through the api and watches completion in PostgreSQL."""

    def __init__(
        self, api_url: str, postgres_url: str, token: str | None, minimal: bool = True
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.postgres_url = postgres_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if minimal:
            # Ids are all a producer needs back; an api without the preference ignores it.
            self.headers["Prefer"] = "return=minimal"

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
        # The figures' one query over every job of the run costs enough for PostgreSQL to
        # JIT-compile it (a tenth of a CPU-second of LLVM, counted as the system's).
        conn = await asyncpg.connect(
            self.postgres_url,
            server_settings={"application_name": "taskforge-bench", "jit": "off"},
        )
        if sampler:
            sampler.start()
        connections = Connections(self.api_url, self.headers)
        try:
            watcher = asyncio.create_task(self._watch(conn, ids, jobs, progress))
            started = time.monotonic()
            if scenario == "batch":
                await self._submit_batches(connections, run, jobs, concurrency, batch_size, ids)
            elif scenario == "single":
                await self._submit_singles(connections, run, jobs, concurrency, ids)
            else:
                await self._submit_trickle(connections, run, jobs, rate, ids)
            submit_seconds = time.monotonic() - started
            await watcher
            rows = await conn.fetch(FIGURES, ids)
        finally:
            connections.close()
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
            dispatch_latency_ms=percentiles_ms([r["dispatch"] for r in completed]),
            start_latency_ms=percentiles_ms([r["start"] for r in completed]),
            finish_latency_ms=percentiles_ms([r["finish"] for r in completed]),
            completed=len(completed),
            resources=resources,
        )

    async def _submit_batches(
        self,
        connections: Connections,
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
                reply = await connections.post(
                    "/v1/jobs/batch", {"jobs": [_job(run, i) for i in chunk]}
                )
                ids.extend(item["job_id"] for item in reply["results"])

        await asyncio.gather(*(sender() for _ in range(max(concurrency, 1))))

    async def _submit_singles(
        self, connections: Connections, run: str, jobs: int, concurrency: int, ids: list[str]
    ) -> None:
        counter = iter(range(jobs))

        async def sender() -> None:
            for index in counter:
                ids.append((await connections.post("/v1/jobs", _job(run, index)))["id"])

        await asyncio.gather(*(sender() for _ in range(max(concurrency, 1))))

    async def _submit_trickle(
        self, connections: Connections, run: str, jobs: int, rate: float, ids: list[str]
    ) -> None:
        interval = 1.0 / rate
        start = time.monotonic()
        pending = set()
        for index in range(jobs):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

            async def one(i: int = index) -> None:
                ids.append((await connections.post("/v1/jobs", _job(run, i)))["id"])

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
