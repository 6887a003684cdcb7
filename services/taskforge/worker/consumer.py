"""The worker loop: read → claim (batch) → run handlers → finish (batch) → ack.

It never writes SQL; every state change goes through :mod:`taskforge.lifecycle`. Side tasks
(finisher, heartbeat) are named and watched: if one dies, the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from taskforge import lifecycle, metrics, spans, streams
from taskforge.config import Settings
from taskforge.jobs import Status, backoff_delay
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.worker.registry import Fail, JobContext, JobLogger, Registry, Retry

log = logging.getLogger("taskforge.worker")

GATHER_SECONDS = 0.02
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)


@dataclass
class Running:
    """A claimed job this worker is running."""

    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    lease_deadline: float = 0.0
    cancel_reason: str | None = None
    headers: dict[str, str] | None = None  # the stream entry's (trace context)


@dataclass
class _Finish:
    outcome: Outcome
    queue: str
    stream_id: str
    job: ClaimedJob | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Worker:
    """Consumes the job streams of ``settings.queues`` with bounded concurrency."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
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
        self._finishes: list[_Finish] = []
        self._finish_ready = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._handbacks: list[tuple[uuid.UUID, int, str, str]] = []
        self._unclaimed: list[tuple[str, str, bytes | None]] = []
        self._closing = False
        self._min_read = max(1, settings.worker_concurrency // 4)
        self._utilization_gauges = [metrics.WORKER_UTILIZATION.labels(q) for q in settings.queues]
        self._few_free_since: float | None = None

    # -- intake ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; then drain within the grace period and hand back the rest."""
        await self._ensure_groups()
        self._utilization()  # exported from the start, not from the first job
        finisher = asyncio.create_task(self._finisher(), name="finisher")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        canceller = asyncio.create_task(self._cancel_listener(), name="cancel-listener")
        sides = {finisher, heartbeat, canceller}
        backoff = 0.1
        try:
            while not stop.is_set():
                for side in sides:
                    if side.done():
                        raise RuntimeError(f"worker side task {side.get_name()} died") from (
                            side.exception()
                        )
                free = self.settings.worker_concurrency - len(self.running)
                if free <= 0 or self._gathering_slots(free):
                    self._slot_free.clear()
                    await _first(
                        stop.wait(), self._slot_free.wait(), timeout=1.0 if free <= 0 else 0.01
                    )
                    continue
                self._few_free_since = None
                try:
                    # Entries read while PostgreSQL was unreachable are claimed first: dropped,
                    # their jobs would wait a visibility timeout for the reaper.
                    entries, self._unclaimed = self._unclaimed, []
                    if not entries:
                        entries = await streams.read(
                            self.redis, self.settings.queues, self.name, free, block_ms=1000
                        )
                    if entries:
                        self._unclaimed = entries
                        await self._claim_and_start(entries)
                        self._unclaimed = []
                    backoff = 0.1
                except ResponseError as exc:
                    # NOGROUP: Redis restarted empty or was flushed. UNBLOCKED: Redis 7 ends
                    # a blocked XREADGROUP whose stream was deleted (FLUSHDB) with this error.
                    if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                        raise
                    await self._ensure_groups()
                except STORE_ERRORS as exc:
                    self._store_error("intake", exc, backoff)
                    await _first(stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, 5.0)
            await self._drain()
        finally:
            # The finisher may be mid-flush: let it finish what it holds, never cancel it
            # with an outcome in hand (the job would stay running until the reaper came).
            self._closing = True
            self._finish_ready.set()
            await asyncio.wait({finisher}, timeout=15.0)
            await self._flush_pending()
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

    async def _claim_and_start(self, entries: list[tuple[str, str, bytes | None]]) -> None:
        stale: list[tuple[str, str]] = []
        wanted: list[tuple[uuid.UUID, str]] = []
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
            headers[stream_id] = envelope.headers
        # Taken before the claim, so our idea of the lease never outlasts the row's.
        deadline = time.monotonic() + self.settings.lease_seconds
        async with self.pool.acquire() as conn:
            claimed = await lifecycle.claim(conn, wanted, self.actor, self.settings.lease_seconds)
        claimed_ids = {job.stream_id for job in claimed}
        for queue, stream_id, _ in entries:
            if stream_id not in claimed_ids and (queue, stream_id) not in stale:
                stale.append((queue, stream_id))
                metrics.STALE_ENTRIES.labels(queue).inc()
        now = time.time()
        for job in claimed:
            series = metrics.job_series(job.queue, job.type)
            series.attempts.inc()
            series.time_in_queue.observe(max(now - job.run_at.timestamp(), 0.0))
            running = Running(job, lease_deadline=deadline, headers=headers.get(job.stream_id))
            self.running[job.id] = running
            running.task = asyncio.create_task(self._execute(running), name=f"job:{job.id}")
        self._utilization()
        if stale:
            # After the claimed jobs started: a Redis error here must not orphan them. An
            # entry left unacked is stale for whoever reclaims it.
            try:
                await streams.ack(self.redis, stale)
            except STORE_ERRORS as exc:
                self._store_error("ack", exc, 0)

    # -- running --------------------------------------------------------------------------

    async def _execute(self, running: Running) -> None:
        job = running.job
        extra = {
            "job_id": str(job.id),
            "queue": job.queue,
            "type": job.type,
            "attempt": job.attempt,
        }
        logger = JobLogger(log, extra)
        handler = self.registry.get(job.type)
        started = time.monotonic()
        outcome: Outcome | None
        # The handler runs inside the job's CONSUMER span, so spans it makes nest under it.
        with spans.process(job, running.headers, self.name) as span:
            try:
                if handler is None:
                    outcome = self._dead(
                        job,
                        f"no handler registered for job type {job.type!r} on queue {job.queue!r}; "
                        "register it with @registry.job in a module named by TASKFORGE_HANDLERS",
                    )
                else:
                    ctx = JobContext(
                        job.id,
                        job.type,
                        job.queue,
                        job.attempt,
                        job.max_attempts,
                        job.stream_id,
                        logger,
                    )
                    timeout = handler.timeout or job.timeout_seconds
                    outcome = await self._call(handler, ctx, job, timeout)
            except asyncio.CancelledError:
                outcome = self._on_cancel(running)
            spans.processed(span, outcome, running.cancel_reason)
        series = metrics.job_series(job.queue, job.type)
        series.runtime.observe(time.monotonic() - started)
        if outcome is not None:
            if outcome.status is Status.COMPLETED:
                series.success.inc()
            else:
                series.failure(outcome.status.value).inc()
            self._finishes.append(
                _Finish(outcome, job.queue, job.stream_id, job, extra=spans.log_ids(span))
            )
            self._finish_ready.set()
        self.running.pop(job.id, None)
        self._slot_free.set()
        self._utilization()

    async def _call(
        self, handler: object, ctx: JobContext, job: ClaimedJob, timeout: float
    ) -> Outcome:
        assert callable(handler)
        try:
            # asyncio.timeout, unlike wait_for, adds no task per job (3.11).
            async with asyncio.timeout(timeout):
                result = await handler(ctx, job.payload)
        except Retry as exc:
            return self._failed(job, f"Retry: {exc}", exc.delay)
        except Fail as exc:
            return self._dead(job, f"Fail: {exc}")
        except TimeoutError as exc:
            spans.record_error(exc)
            return self._failed(job, f"timed out after {timeout:g}s")
        except Exception as exc:
            spans.record_error(exc)
            frames = traceback.format_exception(exc, limit=-3)
            return self._failed(job, f"{type(exc).__name__}: {exc}\n{''.join(frames)[-2000:]}")
        try:
            encoded = orjson.dumps(result).decode()
        except TypeError as exc:
            return self._dead(job, f"handler returned a result that is not JSON: {exc}")
        return Outcome(job.id, job.attempt, Status.COMPLETED, result_json=encoded)

    def _failed(self, job: ClaimedJob, error: str, delay: float | None = None) -> Outcome:
        if job.attempt >= job.max_attempts:
            return self._dead(job, f"{error} (attempt {job.attempt} of {job.max_attempts})")
        if delay is None:
            delay = backoff_delay(
                job.attempt, self.settings.backoff_base, self.settings.backoff_max
            )
        return Outcome(job.id, job.attempt, Status.RETRYING, error=error, delay=delay)

    def _dead(self, job: ClaimedJob, error: str) -> Outcome:
        return Outcome(job.id, job.attempt, Status.DEAD, error=error)

    def _on_cancel(self, running: Running) -> Outcome | None:
        job = running.job
        if running.cancel_reason == "cancel":
            return Outcome(job.id, job.attempt, Status.CANCELLED, error="cancelled on request")
        if running.cancel_reason == "shutdown":
            self._handbacks.append((job.id, job.attempt, job.queue, job.stream_id))
        # "lease": another owner decides now; we record nothing.
        return None

    def cancel(self, job_id: uuid.UUID, reason: str) -> bool:
        """Cancel a running job's handler; ``reason`` is cancel, shutdown or lease."""
        running = self.running.get(job_id)
        if running is None or running.task is None or running.task.done():
            return False
        running.cancel_reason = reason
        running.task.cancel()
        return True

    # -- finishing ------------------------------------------------------------------------

    async def _finisher(self) -> None:
        """Flush outcomes in batches: whatever accumulated while the last flush ran."""
        while True:
            await self._finish_ready.wait()
            self._finish_ready.clear()
            await self._flush_finishes()
            if self._closing and not self._finishes:
                return

    async def _flush_finishes(self) -> None:
        backoff = 0.1
        while self._finishes:
            batch, self._finishes = self._finishes, []
            try:
                async with self.pool.acquire() as conn:
                    done = await lifecycle.finish(conn, [f.outcome for f in batch], self.actor)
                # Ack only after the row is written; an outcome fenced out (the job was
                # rescued meanwhile) is acked too: that entry is finished either way.
                await streams.ack(self.redis, [(f.queue, f.stream_id) for f in batch])
            except STORE_ERRORS as exc:
                self._finishes[:0] = batch  # keep them: nothing is lost, retry
                self._store_error("finish", exc, backoff)
                await asyncio.sleep(backoff)
                # At most a second: these outcomes' leases are no longer renewed, and a
                # finish that lands after the lease lapsed is fenced out (the job runs again).
                backoff = min(backoff * 2, 1.0)
                continue
            dead = [d for d in done if d.status is Status.DEAD]
            if dead:
                await self._notify_dead(dead)
            # The span has ended by now: its ids come along so the line joins the trace.
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
            self._store_error("dlq", exc, 0)

    async def _flush_pending(self) -> None:
        """Before exit: record outcomes and hand back interrupted attempts."""
        deadline = time.monotonic() + 10.0
        while (self._finishes or self._handbacks) and time.monotonic() < deadline:
            try:
                await self._flush_finishes()
                if self._handbacks:
                    handbacks, self._handbacks = self._handbacks, []
                    async with self.pool.acquire() as conn:
                        await lifecycle.hand_back(
                            conn,
                            [(i, a) for i, a, _, _ in handbacks],
                            self.actor,
                            "worker shut down before the job finished; handed back",
                        )
                    await streams.ack(self.redis, [(q, s) for _, _, q, s in handbacks])
            except STORE_ERRORS as exc:
                self._store_error("shutdown", exc, 0.5)
                await asyncio.sleep(0.5)

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then cancel and hand back."""
        if self.running:
            log.info(
                "draining running jobs",
                extra={
                    "action": "worker.drain",
                    "running": len(self.running),
                    "grace": self.settings.shutdown_grace,
                },
            )
            tasks = [r.task for r in self.running.values() if r.task is not None]
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
        for job_id in list(self.running):
            self.cancel(job_id, "shutdown")
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    # -- cancellation ---------------------------------------------------------------------

    async def _cancel_listener(self) -> None:
        """Cancel running jobs the api names on the cancel channel: pushed, not polled.

        A message missed while Redis was unreachable is caught by the heartbeat, which
        also cancels jobs whose row has ``cancel_requested``.
        """
        backoff = 0.1
        # Loops on _closing, not only on cancellation: redis-py's get_message can swallow
        # a CancelledError that lands while it waits, which held shutdown for seconds.
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(streams.cancel_channel())
                backoff = 0.1
                while not self._closing:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._cancel_requested(message.get("data"))
            except STORE_ERRORS as exc:
                self._store_error("cancel", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                # Cancelled mid-subscribe, redis-py's close can wait on the interrupted
                # connection; never let it hold the worker's shutdown.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    def _cancel_requested(self, data: object) -> None:
        try:
            job_id = uuid.UUID(data.decode() if isinstance(data, bytes) else str(data))
        except ValueError:
            return  # not a job id: nothing of ours
        if self.cancel(job_id, "cancel"):
            log.info("cancelling job", extra={"action": "job.cancel", "job_id": str(job_id)})

    # -- heartbeat ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew leases and reset stream idle time of everything running, in one round each."""
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        """One heartbeat: renew leases, touch entries, cancel what we no longer own."""
        snapshot = list(self.running.values())
        if not snapshot:
            return
        now = time.monotonic()
        interval = self.settings.heartbeat_interval
        try:
            # Bounded: a hung connection must not keep us from fencing in time.
            owned = await asyncio.wait_for(self._renew(snapshot), timeout=interval)
        except (*STORE_ERRORS, TimeoutError) as exc:
            self._store_error("heartbeat", exc, 0)
            # Self-fencing: once the lease lapses the reaper may rescue the job and another
            # worker run it, so stop any handler whose lease would lapse before we can renew.
            for running in snapshot:
                if now + interval >= running.lease_deadline:
                    self.cancel(running.job.id, "lease")
            return
        try:
            # The lease in PostgreSQL is what fences; the stream's idle time only keeps the
            # reaper from claiming the entry, so a Redis failure here fences nothing.
            await streams.touch(
                self.redis, self.name, [(r.job.queue, r.job.stream_id) for r in snapshot]
            )
        except STORE_ERRORS as exc:
            self._store_error("heartbeat", exc, 0)
        for running in snapshot:
            if running.job.id not in owned:
                if running.task is not None and not running.task.done():
                    self.cancel(running.job.id, "lease")
                continue
            running.lease_deadline = now + self.settings.lease_seconds
            if owned[running.job.id]:
                self.cancel(running.job.id, "cancel")

    async def _renew(self, snapshot: list[Running]) -> dict[uuid.UUID, bool]:
        async with self.pool.acquire() as conn:
            return await lifecycle.renew_leases(
                conn, [(r.job.id, r.job.attempt) for r in snapshot], self.settings.lease_seconds
            )

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


async def _first(*aws: Awaitable[object], timeout: float) -> None:
    """Wait for the first of several awaitables (or the timeout); cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
