"""One reclaim round: give back to PostgreSQL every job whose worker or stream entry is gone.

Three sweeps, each safe to run on several reaper replicas at once:

1. **idle entries** — XAUTOCLAIM entries idle past the visibility timeout on every queue stream
   (a worker heartbeat touches its entries well before that, so these belong to dead workers);
   their jobs are settled by :func:`lifecycle.rescue_entries`, then the entries are acked —
   except those of a job whose lease is still renewed: its worker is alive, and its next
   heartbeat takes the entry back;
2. **expired leases** — running jobs whose lease lapsed, whatever Redis holds (it may have
   lost the entry in a restart or flush); the entries of the jobs moved are acked;
3. **lost entries** — queued jobs waiting longer than the visibility timeout whose entry is no
   longer in its stream (Redis restarted empty, was flushed or failed over) go back to
   ``pending`` so the dispatcher sends them again.

After a PostgreSQL outage, sweeps 1 and 2 pause for a visibility timeout: workers could not
renew leases while it lasted, so a lapsed lease is no sign of a dead worker until they had
the time to renew. The reaper never writes a job entry: only the scheduler does.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence

import asyncpg
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, streams
from taskforge.config import Settings
from taskforge.jobs import Status
from taskforge.lanes import LaneClient
from taskforge.lifecycle import QueuedEntry, Rescued, RescuePolicy
from taskforge.reaper import entries

log = logging.getLogger("taskforge.reaper")

LEASE_BATCH = 500
LEASE_BATCHES_PER_ROUND = 20
LOST_PAGE = 500
LOST_PAGES_PER_ROUND = 10


def reaper_name() -> str:
    """Consumer name of this reaper process (entries it holds are mid-settlement)."""
    return f"reaper-{socket.gethostname()}-{os.getpid()}"


class Reclaimer:
    """Runs reclaim rounds; counts what it moved by reason (``moved``) for tests and logs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: LaneClient,
        settings: Settings,
        name: str | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.settings = settings
        self.name = name or reaper_name()
        self.policy = RescuePolicy(
            settings.max_deliveries, settings.backoff_base, settings.backoff_max
        )
        self.moved: Counter[str] = Counter()
        self._lost_after: QueuedEntry | None = None
        self._trust_leases_at = 0.0

    def postgres_outage(self) -> None:
        """PostgreSQL was unreachable: workers could not renew their leases either.

        Leases that lapsed meanwhile say nothing about the workers, so sweeps 1 and 2 wait
        a visibility timeout: long enough for live workers to renew them and to record the
        outcomes they hold. Without this, every job in flight during an outage would run
        again.
        """
        self._trust_leases_at = time.monotonic() + self.settings.visibility_timeout

    async def queues(self) -> set[str]:
        """The configured queues and every queue that has a stream."""
        return set(self.settings.queues) | await entries.stream_queues(self.redis)

    async def reclaim_once(self) -> list[Rescued]:
        """One round of the three sweeps; returns the jobs moved."""
        queues = await self.queues()
        # Redis may have restarted empty: recreate groups so workers read again.
        await streams.ensure_groups(self.redis, queues)
        moved: list[Rescued] = []
        if time.monotonic() >= self._trust_leases_at:
            for queue in sorted(queues):
                moved += await self.reclaim_idle(queue)
            moved += await self.rescue_expired()
        moved += await self.rescue_lost()
        return moved

    async def reclaim_idle(self, queue: str) -> list[Rescued]:
        """Sweep 1 for one queue: XAUTOCLAIM idle entries, settle their jobs, ack."""
        min_idle_ms = int(self.settings.visibility_timeout * 1000)
        moved: list[Rescued] = []
        async for page in entries.reclaim_idle(self.redis, queue, self.name, min_idle_ms):
            wanted: list[tuple[uuid.UUID, str, int]] = []
            for entry in page:
                envelope = streams.decode(entry.stream_id, entry.data) if entry.data else None
                if envelope is None:
                    log.error(
                        "undecodable stream entry dropped",
                        extra={
                            "action": "entry.poison",
                            "queue": queue,
                            "stream_id": entry.stream_id,
                        },
                    )
                    continue
                wanted.append((envelope.job_id, entry.stream_id, entry.deliveries))
            async with self.pool.acquire() as conn:
                settled = await lifecycle.rescue_entries(conn, wanted, self.policy)
            live = {r.stream_id for r in settled if r.live}
            # Ack after the rows are written: a crash in between leaves the entries with
            # this reaper, and the next claimer settles them again (the updates are fenced).
            await streams.ack(
                self.redis, [(queue, e.stream_id) for e in page if e.stream_id not in live]
            )
            moved += await self._record([r for r in settled if not r.live])
        return moved

    async def rescue_expired(self) -> list[Rescued]:
        """Sweep 2: running jobs whose lease lapsed, in bounded batches."""
        moved: list[Rescued] = []
        for _ in range(LEASE_BATCHES_PER_ROUND):
            async with self.pool.acquire() as conn:
                batch = await lifecycle.rescue_expired_leases(conn, self.policy, LEASE_BATCH)
            moved += await self._record(batch)
            await self._ack_rescued(batch)
            if len(batch) < LEASE_BATCH:
                break
        return moved

    async def _ack_rescued(self, rescued: Sequence[Rescued]) -> None:
        """Ack the entries of jobs sweep 2 moved, which no one will finish any more.

        Sweep 1 would ack them too, but only once they are idle past the visibility timeout
        (a round later at best): until then they would count as pending in the stream.
        """
        done = [(r.queue, r.stream_id) for r in rescued if r.queue and r.stream_id]
        try:
            await streams.ack(self.redis, done)
        except RedisError as exc:
            # The rows are already moved; the idle sweep acks the entries later.
            log.warning(
                "acking rescued entries failed; the idle sweep will",
                extra={"action": "reaper.ack.error", "error": repr(exc)},
            )

    async def rescue_lost(self) -> list[Rescued]:
        """Sweep 3: queued jobs whose stream entry no longer exists, a few pages per round."""
        moved: list[Rescued] = []
        older_than = self.settings.visibility_timeout
        for _ in range(LOST_PAGES_PER_ROUND):
            async with self.pool.acquire() as conn:
                page = await lifecycle.queued_entries(conn, older_than, self._lost_after, LOST_PAGE)
            # Resume after this page next time; a short page means we reached the end.
            self._lost_after = page[-1] if len(page) == LOST_PAGE else None
            if not page:
                break
            gone = await entries.missing_entries(self.redis, [(q.queue, q.stream_id) for q in page])
            lost = [(q.id, q.stream_id) for q in page if (q.queue, q.stream_id) in gone]
            if lost:
                await streams.ensure_groups(self.redis, {q.queue for q in page})
                async with self.pool.acquire() as conn:
                    moved += await self._record(
                        await lifecycle.rescue_lost_entries(conn, lost, self.policy)
                    )
            if self._lost_after is None:
                break
        return moved

    async def _record(self, moved: Sequence[Rescued]) -> list[Rescued]:
        for rescued in moved:
            self.moved[rescued.reason] += 1
            metrics.JOBS_RECLAIMED.labels(rescued.queue or "", rescued.reason).inc()
            log.info(
                "job rescued",
                extra={
                    "action": "job.rescue",
                    "job_id": str(rescued.id),
                    "queue": rescued.queue,
                    "reason": rescued.reason,
                    "from_status": rescued.from_status.value,
                    "status": rescued.status.value if rescued.status else None,
                    "attempt": rescued.attempts,
                },
            )
        await self._notify_dead(r for r in moved if r.status is Status.DEAD)
        return list(moved)

    async def _notify_dead(self, dead: Iterable[Rescued]) -> None:
        notices = [
            {
                "job_id": d.id,
                "type": d.type or "",
                "queue": d.queue or "",
                "attempts": d.attempts,
                "error": d.error,
                "headers": {"traceparent": d.traceparent} if d.traceparent else {},
            }
            for d in dead
        ]
        try:
            await streams.publish_dead(self.redis, notices)
        except RedisError as exc:
            # A courtesy for ops consumers; PostgreSQL already holds the dead job.
            log.warning("DLQ notice failed", extra={"action": "dlq.error", "error": repr(exc)})
