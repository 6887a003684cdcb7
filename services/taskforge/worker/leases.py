"""Watching running jobs: the heartbeat that renews leases, the listener for cancel requests,
and the sweep that stops handlers past their timeout.

A claimed job holds a lease in PostgreSQL. The heartbeat renews every running job's lease in
one statement and resets their stream idle time, so a long job is never taken for one whose
worker died; a job whose lease this worker can no longer vouch for is stopped (self-fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

from taskforge import lifecycle, streams
from taskforge.worker.stores import STORE_ERRORS, connection

if TYPE_CHECKING:
    from taskforge.worker.consumer import Worker
    from taskforge.worker.execution import Running

log = logging.getLogger("taskforge.worker")

# Handler timeouts and leases are enforced by one sweep this often, not a timer per job: a
# timer armed and cancelled for every job was a tenth of a worker's CPU per no-op job. A
# handler is stopped at most this much after its timeout, and this much before its lease
# lapses.
TIMEOUT_SWEEP_SECONDS = 0.05


class LeaseKeeper:
    """Heartbeat and cancel listener of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def listen_for_cancels(self) -> None:
        """Cancel running jobs the api names on the cancel channel: pushed, not polled.

        A message missed while Redis was unreachable is caught by the heartbeat, which
        also cancels jobs whose row has ``cancel_requested``.
        """
        backoff = 0.1
        # Loops on worker.closing, not only on cancellation: redis-py's get_message can swallow
        # a CancelledError that lands while it waits, which held shutdown for seconds.
        while not self.worker.closing:
            pubsub = self.worker.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(streams.cancel_channel())
                backoff = 0.1
                while not self.worker.closing:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._cancel_requested(message.get("data"))
            except STORE_ERRORS as exc:
                self.worker._store_error("cancel", exc, backoff)
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
        if self.worker.cancel(job_id, "cancel"):
            log.info("cancelling job", extra={"action": "job.cancel", "job_id": str(job_id)})

    async def enforce_timeouts(self) -> None:
        """Cancel every handler that has run past its timeout (reason ``timeout``), and every
        one whose lease is about to lapse unrenewed (reason ``lease``).

        The lease is fenced here, not only by the heartbeat: a heartbeat waiting on a
        PostgreSQL that hangs (rather than refuses) makes no progress, and a handler must not
        run on past its lease while the reaper hands the job to another worker.
        """
        while True:
            await asyncio.sleep(TIMEOUT_SWEEP_SECONDS)
            now = time.monotonic()
            fence = now + 2 * TIMEOUT_SWEEP_SECONDS
            for running in list(self.worker.running.values()):
                if running.cancel_reason is not None:
                    continue
                if running.lease_deadline <= fence:
                    if self.worker.cancel(running.job.id, "lease"):
                        log.warning(
                            "lease about to lapse unrenewed; handler stopped",
                            extra={"action": "job.fenced", "job_id": str(running.job.id)},
                        )
                elif running.timeout_at <= now:
                    self.worker.cancel(running.job.id, "timeout")

    async def run(self) -> None:
        """Renew leases and reset stream idle time of everything running, in one round each,
        every ``heartbeat_interval`` from the last one's start (a slow one is not added on)."""
        interval = self.worker.settings.heartbeat_interval
        while True:
            started = time.monotonic()
            await self.heartbeat_once()
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def heartbeat_once(self) -> None:
        """One heartbeat: renew leases, touch entries, cancel what we no longer own."""
        snapshot = list(self.worker.running.values())
        if not snapshot:
            return
        now = time.monotonic()
        interval = self.worker.settings.heartbeat_interval
        try:
            # Bounded: a hung connection must not keep us from fencing in time.
            owned = await asyncio.wait_for(self._renew(snapshot), timeout=interval)
        except (*STORE_ERRORS, TimeoutError) as exc:
            self.worker._store_error("heartbeat", exc, 0)
            # Self-fencing: once the lease lapses the reaper may rescue the job and another
            # worker run it, so stop any handler whose lease would lapse before we can renew.
            for running in snapshot:
                if now + interval >= running.lease_deadline:
                    self.worker.cancel(running.job.id, "lease")
            return
        try:
            # The lease in PostgreSQL is what fences; the stream's idle time only keeps the
            # reaper from claiming the entry, so a Redis failure here fences nothing. Bounded
            # like the renewal: a Redis that stopped answering must not stop the heartbeat.
            await asyncio.wait_for(
                streams.touch(
                    self.worker.redis,
                    self.worker.name,
                    [(r.job.queue, r.job.stream_id) for r in snapshot],
                ),
                timeout=interval,
            )
        except (*STORE_ERRORS, TimeoutError) as exc:
            self.worker._store_error("heartbeat", exc, 0)
        for running in snapshot:
            if running.job.id not in owned:
                if running.task is not None and not running.task.done():
                    self.worker.cancel(running.job.id, "lease")
                continue
            running.lease_deadline = now + self.worker.settings.lease_seconds
            if owned[running.job.id]:
                self.worker.cancel(running.job.id, "cancel")

    async def _renew(self, snapshot: list[Running]) -> dict[uuid.UUID, bool]:
        async with connection(self.worker.pool) as conn:
            return await lifecycle.renew_leases(
                conn,
                [(r.job.id, r.job.attempt, r.job.stream_id) for r in snapshot],
                self.worker.settings.lease_seconds,
            )
