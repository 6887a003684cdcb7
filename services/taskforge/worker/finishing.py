"""Recording outcomes: the worker's finishes, batched, and hand-backs at shutdown.

Outcomes accumulate while a flush runs; the next flush records them all in one statement
(:func:`taskforge.lifecycle.finish`), acks their stream entries in one pipeline, then posts
dead-letter notices. A store error keeps the outcomes and retries: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, streams
from taskforge.jobs import Status
from taskforge.lanes import LaneClient
from taskforge.lifecycle import ClaimedJob, Outcome

log = logging.getLogger("taskforge.worker")

STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)
ErrorReporter = Callable[[str, BaseException, float], None]


@dataclass
class FinishItem:
    """One attempt's outcome waiting to be recorded, with the entry to ack after."""

    outcome: Outcome
    queue: str
    stream_id: str
    job: ClaimedJob | None = None
    extra: dict[str, object] = field(default_factory=dict)
    runtime: float | None = None  # the handler's seconds, for the runtime histogram


class Finisher:
    """Records a worker's outcomes in batches and hands back interrupted attempts."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: LaneClient,
        actor: str,
        on_error: ErrorReporter,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.actor = actor
        self._on_error = on_error
        self._on_recorded = on_recorded
        self.pending: list[FinishItem] = []
        self._recording = 0
        self.handbacks: list[tuple[uuid.UUID, int, str, str]] = []
        self.closing = False
        self._ready = asyncio.Event()

    @property
    def held(self) -> int:
        """Outcomes not yet recorded: their jobs still hold a slot of the worker.

        A worker that freed slots before the outcome was written would keep claiming while
        PostgreSQL is slow, with jobs running in PostgreSQL whose leases nobody renews.
        """
        return len(self.pending) + self._recording

    def add(self, item: FinishItem) -> None:
        """Queue an outcome for the next flush."""
        self.pending.append(item)
        self._ready.set()

    def close(self) -> None:
        """Let :meth:`run` return once it has flushed what it holds."""
        self.closing = True
        self._ready.set()

    async def run(self) -> None:
        """Flush outcomes in batches: whatever accumulated while the last flush ran."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.flush()
            if self.closing and not self.pending:
                return

    async def flush(self) -> None:
        """Record every pending outcome (one UPDATE), then ack their entries (one pipeline)."""
        backoff = 0.1
        while self.pending:
            batch, self.pending = self.pending, []
            self._recording = len(batch)
            # Building a log record's fields per job costs as much as a job; the completed
            # finishes come back from PostgreSQL only for their log lines.
            logs_each = log.isEnabledFor(logging.INFO)
            try:
                async with self.pool.acquire() as conn:
                    done = await lifecycle.finish(
                        conn, [f.outcome for f in batch], self.actor, report_completed=logs_each
                    )
                # Ack only after the row is written; an outcome fenced out (the job was
                # rescued meanwhile) is acked too: that entry is finished either way.
                await streams.ack(self.redis, [(f.queue, f.stream_id) for f in batch])
            except STORE_ERRORS as exc:
                self.pending[:0] = batch  # keep them: nothing is lost, retry
                self._recording = 0
                self._on_error("finish", exc, backoff)
                await asyncio.sleep(backoff)
                # At most a second: these outcomes' leases are no longer renewed, and a
                # finish that lands after the lease lapsed is fenced out (the job runs again).
                backoff = min(backoff * 2, 1.0)
                continue
            self._recording = 0
            self._on_recorded()
            count_outcomes(batch)
            dead = [d for d in done if d.status is Status.DEAD]
            if dead:
                await self._notify_dead(dead)
            # The span has ended by now: its ids come along so the line joins the trace.
            if not logs_each:
                continue
            trace_ids = {f.outcome.job_id: f.extra for f in batch}
            for finished in done:
                log.info(
                    "job finished",
                    extra={
                        "action": "job.finish",
                        "job_id": str(finished.id),
                        "queue": finished.queue,
                        "type": finished.type,
                        "status": finished.status.value,
                        "attempt": finished.attempts,
                        **trace_ids.get(finished.id, {}),
                        **(
                            {"error": (finished.last_error or "")[:500]}
                            if finished.status is not Status.COMPLETED
                            else {}
                        ),
                    },
                )

    async def _notify_dead(self, dead: list[lifecycle.Finished]) -> None:
        notices = [
            {
                "job_id": d.id,
                "type": d.type,
                "queue": d.queue,
                "attempts": d.attempts,
                "error": d.last_error,
                "headers": {"traceparent": d.traceparent} if d.traceparent else {},
            }
            for d in dead
        ]
        try:
            await streams.publish_dead(self.redis, notices)
        except STORE_ERRORS as exc:
            # The notice is a courtesy for ops consumers; PostgreSQL holds the dead job.
            self._on_error("dlq", exc, 0)

    async def flush_all(self) -> None:
        """Before exit: record outcomes and hand back interrupted attempts."""
        deadline = time.monotonic() + 10.0
        while (self.pending or self.handbacks) and time.monotonic() < deadline:
            try:
                await self.flush()
                if self.handbacks:
                    handbacks, self.handbacks = self.handbacks, []
                    async with self.pool.acquire() as conn:
                        await lifecycle.hand_back(
                            conn,
                            [(i, a) for i, a, _, _ in handbacks],
                            self.actor,
                            "worker shut down before the job finished; handed back",
                        )
                    await streams.ack(self.redis, [(q, s) for _, _, q, s in handbacks])
            except STORE_ERRORS as exc:
                self._on_error("shutdown", exc, 0.5)
                await asyncio.sleep(0.5)


def count_outcomes(batch: list[FinishItem]) -> None:
    """Outcome counters and the runtime histogram, one update per job type and batch."""
    by_series: dict[tuple[str, str], list[FinishItem]] = {}
    for item in batch:
        if item.job is not None:
            by_series.setdefault((item.queue, item.job.type), []).append(item)
    for (queue, job_type), items in by_series.items():
        series = metrics.job_series(queue, job_type)
        metrics.observe_many(series.runtime, [i.runtime for i in items if i.runtime is not None])
        by_status = Counter(item.outcome.status for item in items)
        completed = by_status.pop(Status.COMPLETED, 0)
        if completed:
            series.success.inc(completed)
        for status, count in by_status.items():
            series.failure(status.value).inc(count)
