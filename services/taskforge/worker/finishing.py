"""Recording outcomes: the worker's finishes, batched, and hand-backs at shutdown.

Outcomes accumulate while a flush runs; the next flush records them all in one statement
(:func:`taskforge.lifecycle.finish`), acks their stream entries in one pipeline, then posts
dead-letter notices. A transient store error keeps the outcomes and retries: nothing is
dropped. An outcome PostgreSQL refuses (:mod:`.refusals`) is isolated by halving its batch,
so that every other one is recorded, and is recorded as dead instead.

From :meth:`Finisher.close` the finisher has ``SHUTDOWN_SECONDS`` to record what it holds and
hand back interrupted attempts; what is left then is logged, and the reaper rescues those jobs
when their leases lapse.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import asyncpg

from taskforge import lifecycle, metrics, streams
from taskforge.lanes import LaneClient
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.worker.refusals import is_transient, refused_as_dead
from taskforge.worker.reports import (
    count_outcomes,
    dead_notices,
    log_finishes,
    log_left_at_shutdown,
)
from taskforge.worker.stores import STORE_ERRORS, ErrorReporter, connection

log = logging.getLogger("taskforge.worker")

# From close() to the end of flush_all. The worker's terminationGraceMarginSeconds (the
# chart's time beyond the shutdown grace) must leave room for it.
SHUTDOWN_SECONDS = 10.0


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
        self.unacked: list[tuple[str, str]] = []  # entries of recorded outcomes, ack failed
        self.closing = False
        self._ready = asyncio.Event()
        self._deadline: float | None = None  # in the event loop's time; set by close()
        self._calls: set[asyncio.Timeout] = set()  # the store calls under way

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
        """Let :meth:`run` return once it has flushed what it holds, or once
        ``SHUTDOWN_SECONDS`` have passed, cutting short the store calls under way then."""
        self.closing = True
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + SHUTDOWN_SECONDS
            # A call made before close() has no deadline of its own: a PostgreSQL that hangs
            # would hold it for the pool's command timeout.
            for call in self._calls:
                call.reschedule(self._deadline)
        self._ready.set()

    async def run(self) -> None:
        """Flush outcomes in batches: whatever accumulated while the last flush ran."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not await self.flush() or (self.closing and not self.pending):
                return

    async def flush(self) -> bool:
        """Record every pending outcome (one UPDATE), then ack their entries (one pipeline).

        A transient store error keeps the outcomes and retries. False when the shutdown
        deadline passed first, with outcomes still pending.
        """
        backoff = 0.1
        while self.pending:
            batch, self.pending = self.pending, []
            self._recording += len(batch)
            settled: set[int] = set()
            try:
                await self._record(batch, settled)
            except STORE_ERRORS as exc:
                left = [item for item in batch if id(item) not in settled]
                self._recording -= len(left)
                self.pending[:0] = left  # keep them: nothing is lost, retry
                wait = min(backoff, self._time_left())
                if wait <= 0:
                    return False
                self._on_error("finish", exc, wait)
                await asyncio.sleep(wait)
                # At most a second: these outcomes' leases are no longer renewed, and a
                # finish that lands after the lease lapsed is fenced out (the job runs again).
                backoff = min(backoff * 2, 1.0)
        return True

    async def _record(self, items: list[FinishItem], settled: set[int]) -> None:
        """Record ``items``, adding each one recorded (or dropped) to ``settled``.

        A batch PostgreSQL refuses is halved and each half recorded on its own, down to the
        outcomes it refuses alone (:meth:`_refused`); a transient error is raised.
        """
        try:
            done = await self._finish(items)
        except STORE_ERRORS as exc:
            if is_transient(exc):
                raise
            if len(items) > 1:
                half = len(items) // 2
                await self._record(items[:half], settled)
                await self._record(items[half:], settled)
                return
            recorded, done = await self._refused(items[0], exc)
        else:
            recorded = items
        settled.update(map(id, items))
        self._recording -= len(items)
        await self._recorded(recorded, done)

    async def _finish(self, items: list[FinishItem]) -> list[lifecycle.Finished]:
        """One finish statement, then one ack pipeline."""
        # Building a log record's fields per job costs as much as a job; the completed
        # finishes come back from PostgreSQL only for their log lines.
        logs_each = log.isEnabledFor(logging.INFO)
        async with self._bounded(), connection(self.pool) as conn:
            done = await lifecycle.finish(
                conn,
                [(f.outcome, f.stream_id) for f in items],
                self.actor,
                report_completed=logs_each,
            )
        # Ack only after the row is written; an outcome fenced out (the job was rescued
        # meanwhile) is acked too: that entry is finished either way.
        await self.ack([(f.queue, f.stream_id) for f in items])
        return done

    async def ack(self, entries: list[tuple[str, str]]) -> None:
        """Ack the entries of recorded outcomes, with those an earlier ack failed to.

        A store error keeps them for the next try instead of raising: their outcomes are
        recorded, and the finish sent again would be fenced out, which lost the batch's
        dead-letter notices and log lines. Left unacked, an entry is only stale: should this
        worker stop before acking it, the reaper acks it once it has been idle a lease.
        """
        entries = self.unacked + entries
        try:
            async with self._bounded():
                await streams.ack(self.redis, entries)
        except STORE_ERRORS as exc:
            self.unacked = entries
            self._on_error("ack", exc, 0)
        else:
            self.unacked = []

    async def _refused(
        self, item: FinishItem, exc: BaseException
    ) -> tuple[list[FinishItem], list[lifecycle.Finished]]:
        """Record as dead an outcome PostgreSQL refused; what was recorded comes back.

        Refused as dead too, it is dropped: its entry stays unacked and its lease lapses, as
        if the worker had died, and the reaper rescues the job.
        """
        metrics.STORE_ERRORS.labels("postgres", "worker").inc()
        dead = replace(item, outcome=refused_as_dead(item.outcome, exc))
        about = {
            "job_id": str(item.outcome.job_id),
            "queue": item.queue,
            "status": item.outcome.status.value,
            "error": dead.outcome.error,
        }
        try:
            done = await self._finish([dead])
        except STORE_ERRORS as again:
            if is_transient(again):
                raise
            log.error(
                "outcome refused by PostgreSQL, even as dead; dropped: the reaper rescues "
                "the job when its lease lapses",
                extra={
                    "action": "job.finish.dropped",
                    **about,
                    "dead_error": f"{type(again).__name__}: {again}"[:1000],
                },
            )
            return [], []
        log.error(
            "outcome refused by PostgreSQL; recorded as dead",
            extra={"action": "job.finish.refused", **about},
        )
        return [dead], done

    async def _recorded(self, items: list[FinishItem], done: list[lifecycle.Finished]) -> None:
        """Free the slots of recorded outcomes and report them (:mod:`.reports`)."""
        self._on_recorded()
        count_outcomes(items)
        notices = dead_notices(done)
        if notices:
            try:
                async with self._bounded():
                    await streams.publish_dead(self.redis, notices)
            except STORE_ERRORS as exc:
                # The notice is a courtesy for ops consumers; PostgreSQL holds the dead job.
                self._on_error("dlq", exc, 0)
        if log.isEnabledFor(logging.INFO):
            log_finishes(items, done)

    async def flush_all(self) -> None:
        """Before exit: record outcomes and hand back interrupted attempts, until
        ``SHUTDOWN_SECONDS`` after :meth:`close`; then log what is left."""
        self.close()
        if self.unacked:
            await self.ack([])
        while await self.flush() and self.handbacks:
            try:
                await self._hand_back()
            except STORE_ERRORS as exc:
                wait = min(0.5, self._time_left())
                if wait <= 0:
                    break
                self._on_error("shutdown", exc, wait)
                await asyncio.sleep(wait)
        # Nothing is lost, only later: the reaper rescues these jobs once their leases lapse
        # (and acks the entries). The operator should know why they ran again or waited.
        log_left_at_shutdown(self.held, len(self.handbacks), len(self.unacked), SHUTDOWN_SECONDS)

    async def _hand_back(self) -> None:
        """Return interrupted attempts to pending, then ack their entries. They stay in
        ``handbacks`` until both are done: a store error leaves them for the retry."""
        handbacks = self.handbacks[:]
        async with self._bounded():
            async with connection(self.pool) as conn:
                await lifecycle.hand_back(
                    conn,
                    [(i, a, s) for i, a, _, s in handbacks],
                    self.actor,
                    "worker shut down before the job finished; handed back",
                )
            await streams.ack(self.redis, [(q, s) for _, _, q, s in handbacks])
        del self.handbacks[: len(handbacks)]  # those appended meanwhile wait for the next try

    @asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        """A store call, cut short with TimeoutError (a store error) at the shutdown deadline."""
        async with asyncio.timeout_at(self._deadline) as call:
            self._calls.add(call)
            try:
                yield
            finally:
                self._calls.discard(call)

    def _time_left(self) -> float:
        """Seconds to the shutdown deadline; infinite before :meth:`close`."""
        if self._deadline is None:
            return math.inf
        return self._deadline - asyncio.get_running_loop().time()
