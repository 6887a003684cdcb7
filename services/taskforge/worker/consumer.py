"""The worker loop: read → claim (batch) → run handlers → finish (batch) → ack.

It never writes SQL; every state change goes through :mod:`taskforge.lifecycle`. Each
claimed job runs in a task of its own (:mod:`.execution`). Side tasks (the finisher in
:mod:`.finishing`, the heartbeat and cancel listener in :mod:`.leases`) are named and
watched: if one dies, the worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg
from redis.exceptions import RedisError, ResponseError

from taskforge import lifecycle, metrics, streams
from taskforge.config import Settings
from taskforge.lanes import LaneClient
from taskforge.resources import wait_first
from taskforge.worker.execution import JobRunner, Running
from taskforge.worker.finishing import Finisher
from taskforge.worker.leases import LeaseKeeper
from taskforge.worker.registry import Registry
from taskforge.worker.stores import STORE_ERRORS

log = logging.getLogger("taskforge.worker")

GATHER_SECONDS = 0.02


def free_slots(concurrency: int, running: int, held: int) -> int:
    """How many jobs the intake may claim now: ``concurrency`` less the jobs running, less
    the outcomes ``held`` (not yet recorded) beyond two batches' worth.

    An outcome not yet recorded leaves its job running in PostgreSQL, and nobody renews its
    lease; so past a bound each one holds a slot, and a slow PostgreSQL cannot let claims run
    away: at most ``3 * concurrency`` jobs are ever claimed and not yet recorded. The bound is
    two batches, not one, so that the intake claims the next batch while the finisher records
    one and the one after it waits: with one, a single worker's slots stood empty for as long
    as each finish took, and one worker drained 10-20% slower (7 of 8 alternated runs).
    """
    return concurrency - running - max(0, held - 2 * concurrency)


class Worker:
    """Consumes the job streams of ``settings.queues`` with bounded concurrency."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: LaneClient,
        registry: Registry,
        settings: Settings,
        name: str | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self.name = name or f"worker-{uuid.uuid4().hex[:12]}"
        self.actor = f"worker:{self.name}"
        self.running: dict[uuid.UUID, Running] = {}
        self._slot_free = asyncio.Event()
        self.finisher = Finisher(
            pool, redis, self.actor, self._store_error, on_recorded=self._slot_free.set
        )
        self.leases = LeaseKeeper(self)
        self.runner = JobRunner(registry, settings, self.finisher, self.name, self._job_done)
        self._unclaimed: list[tuple[str, str, bytes | None]] = []
        self.closing = False
        self._min_read = max(1, settings.worker_concurrency // 4)
        self._utilization_gauges = [metrics.WORKER_UTILIZATION.labels(q) for q in settings.queues]
        self._few_free_since: float | None = None

    # -- intake ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; then drain within the grace period and hand back the rest."""
        await self._ensure_groups()
        self._utilization()  # exported from the start, not from the first job
        finisher = asyncio.create_task(self.finisher.run(), name="finisher")
        heartbeat = asyncio.create_task(self.leases.run(), name="heartbeat")
        canceller = asyncio.create_task(self.leases.listen_for_cancels(), name="cancel-listener")
        timeouts = asyncio.create_task(self.leases.enforce_timeouts(), name="timeouts")
        sides = {finisher, heartbeat, canceller, timeouts}
        backoff = 0.1
        try:
            while not stop.is_set():
                # Once per turn of the loop, not per job: a gauge set per queue per job
                # cost more than the no-op job itself.
                self._utilization()
                for side in sides:
                    if side.done():
                        raise RuntimeError(f"worker side task {side.get_name()} died") from (
                            side.exception()
                        )
                free = free_slots(
                    self.settings.worker_concurrency, len(self.running), self.finisher.held
                )
                if free <= 0 or self._gathering_slots(free):
                    self._slot_free.clear()
                    await wait_first(
                        stop.wait(), self._slot_free.wait(), timeout=1.0 if free <= 0 else 0.01
                    )
                    continue
                self._few_free_since = None
                try:
                    # Entries read while PostgreSQL was unreachable are claimed first: dropped,
                    # their jobs would wait a visibility timeout for the reaper.
                    entries, self._unclaimed = self._unclaimed, []
                    again = bool(entries)  # after a claim that raised: it may have committed
                    if not entries:
                        entries = await streams.read(
                            self.redis, self.settings.queues, self.name, free, block_ms=1000
                        )
                    if entries:
                        self._unclaimed = entries
                        await self._claim_and_start(entries, again)
                        self._unclaimed = []
                    backoff = 0.1
                except STORE_ERRORS as exc:
                    # NOGROUP: Redis restarted empty or was flushed. UNBLOCKED: Redis 7 ends
                    # a blocked XREADGROUP whose stream was deleted (FLUSHDB) with this error.
                    if isinstance(exc, ResponseError) and (
                        "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)
                    ):
                        await self._ensure_groups()
                        continue
                    # Any other error reply (READONLY after a failover, MISCONF on a full
                    # disk, BUSY, OOM) is Redis's to mend and ours to wait out, like an
                    # unreachable store, with the running jobs still running.
                    self._store_error("intake", exc, backoff)
                    await wait_first(stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, 5.0)
        except BaseException:
            # Left by an error (a side task died): stop what still runs and hand it back now,
            # rather than leave it for the reaper a lease later.
            await self._drain(grace=0.0)
            raise
        else:
            await self._drain()
        finally:
            self.runner.close()
            # The finisher may be mid-flush: let it finish what it holds, never cancel it
            # with an outcome in hand (the job would stay running until the reaper came).
            self.closing = True
            self.finisher.close()
            await asyncio.wait({finisher}, timeout=15.0)
            await self.finisher.flush_all()
            for side in sides:
                side.cancel()
            # Bounded: a side task stuck in a client's cleanup must not hold the exit.
            await asyncio.wait(sides, timeout=5.0)

    def _gathering_slots(self, free: int) -> bool:
        """Wait briefly while only a few slots are free, so reads and claims stay batched.

        Reading as soon as one slot frees turns a busy worker into one claim per job; waiting
        until a quarter of the slots are free (or GATHER_SECONDS passed) keeps batches large
        without idling slots for long.
        """
        if free >= self._min_read or not self.running:
            return False
        now = time.monotonic()
        if self._few_free_since is None:
            self._few_free_since = now
        return now - self._few_free_since < GATHER_SECONDS

    async def _ensure_groups(self) -> None:
        backoff = 0.1
        while True:
            try:
                await streams.ensure_groups(self.redis, self.settings.queues)
                return
            except STORE_ERRORS as exc:
                self._store_error("groups", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim_and_start(
        self, entries: list[tuple[str, str, bytes | None]], again: bool = False
    ) -> None:
        stale: list[tuple[str, str]] = []
        wanted: list[tuple[uuid.UUID, str]] = []
        dispatch_locks: list[int] = []
        headers: dict[str, dict[str, str]] = {}
        for queue, stream_id, data in entries:
            envelope = streams.decode(stream_id, data) if data else None
            if envelope is None:
                log.error(
                    "undecodable stream entry dropped",
                    extra={"action": "entry.poison", "queue": queue, "stream_id": stream_id},
                )
                stale.append((queue, stream_id))
                continue
            wanted.append((envelope.job_id, stream_id))
            dispatch_locks.append(envelope.dispatch_lock)
            headers[stream_id] = envelope.headers
        # Taken before the claim, so our idea of the lease never outlasts the row's.
        deadline = time.monotonic() + self.settings.lease_seconds
        async with self.pool.acquire() as conn:
            claimed = await lifecycle.claim(
                conn, wanted, self.actor, self.settings.lease_seconds, dispatch_locks, again
            )
        claimed_ids = {job.stream_id for job in claimed}
        for queue, stream_id, _ in entries:
            if stream_id not in claimed_ids and (queue, stream_id) not in stale:
                stale.append((queue, stream_id))
                metrics.STALE_ENTRIES.labels(queue).inc()
        now = time.time()
        # Metrics per batch and job type, not per job (see metrics.observe_many).
        waited: dict[tuple[str, str], list[float]] = {}
        for job in claimed:
            if job.id in self.running:
                # A claim sent again returns what the first one claimed (its reply was lost
                # after the commit); a job this worker already runs is not started twice.
                continue
            waited.setdefault((job.queue, job.type), []).append(
                max(now - job.run_at.timestamp(), 0.0)
            )
            running = Running(job, lease_deadline=deadline, headers=headers.get(job.stream_id))
            self.running[job.id] = running
            running.task = asyncio.create_task(self.runner.run(running), name=f"job:{job.id}")
        for (queue, job_type), waits in waited.items():
            series = metrics.job_series(queue, job_type)
            series.attempts.inc(len(waits))
            metrics.observe_many(series.time_in_queue, waits)
        if stale:
            # After the claimed jobs started: a Redis error here must not orphan them. An
            # entry left unacked is stale for whoever reclaims it.
            try:
                await streams.ack(self.redis, stale)
            except STORE_ERRORS as exc:
                self._store_error("ack", exc, 0)

    # -- running --------------------------------------------------------------------------

    def _job_done(self, job_id: uuid.UUID) -> None:
        self.running.pop(job_id, None)
        self._slot_free.set()

    def cancel(self, job_id: uuid.UUID, reason: str) -> bool:
        """Cancel a running job's handler; ``reason`` is cancel, shutdown, lease or timeout."""
        running = self.running.get(job_id)
        if running is None or running.task is None or running.task.done():
            return False
        running.cancel_reason = reason
        if running.stopping is not None:
            running.stopping.set()  # a sync handler's thread cannot be cancelled; it is asked
        running.task.cancel()
        return True

    async def _drain(self, grace: float | None = None) -> None:
        """Let running jobs finish within ``grace`` (default: the shutdown grace period),
        then cancel and hand back the rest."""
        grace = self.settings.shutdown_grace if grace is None else grace
        if self.running and grace > 0:
            log.info(
                "draining running jobs",
                extra={"action": "worker.drain", "running": len(self.running), "grace": grace},
            )
            tasks = [r.task for r in self.running.values() if r.task is not None]
            await asyncio.wait(tasks, timeout=grace)
        for job_id in list(self.running):
            self.cancel(job_id, "shutdown")
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        stuck = [t for t in tasks if not t.done()]
        if stuck:
            # Sync handlers that did not return when asked (see worker.threads): their jobs
            # stay running in PostgreSQL, neither recorded nor handed back while they may
            # still be at work; the reaper rescues them once this worker's leases lapse.
            log.warning(
                "handlers still running after being stopped; left to the reaper",
                extra={"action": "worker.drain.stuck", "running": len(stuck)},
            )

    # -- cancellation ---------------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        """One heartbeat now (tests and shutdown paths); see :class:`LeaseKeeper`."""
        await self.leases.heartbeat_once()

    # -- helpers --------------------------------------------------------------------------

    def _utilization(self) -> None:
        busy = len(self.running) / self.settings.worker_concurrency
        for gauge in self._utilization_gauges:
            gauge.set(busy)

    def _store_error(self, where: str, exc: BaseException, retry_in: float) -> None:
        store = "redis" if isinstance(exc, RedisError) else "postgres"
        metrics.STORE_ERRORS.labels(store, "worker").inc()
        log.warning(
            "store error; retrying",
            extra={"action": f"worker.{where}.error", "error": repr(exc), "retry_in": retry_in},
        )
