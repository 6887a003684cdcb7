"""The dispatcher: moves due rows from PostgreSQL into the Redis job streams.

Only this module writes job entries to job streams, and only for rows it holds locked:
``SELECT … FOR UPDATE SKIP LOCKED`` (priority order) → one XADD pipeline → ``UPDATE … queued,
stream_id`` (which also tells when the next waiting row is due) → COMMIT (which begins the
next round's transaction: :meth:`Dispatcher._session_round`). If
Redis fails, the transaction rolls back and the rows stay due; if PostgreSQL fails after the
XADDs, those entries are stale (their rows are not queued with that stream id) and workers
drop them. Several scheduler replicas skip each other's rows. The due-rows query also takes
the dispatch's advisory lock (a random key each entry carries) until the COMMIT: a worker
that reads an entry before then waits on it, not on the rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence

import asyncpg
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, spans, streams
from taskforge.lanes import LaneClient
from taskforge.lifecycle import DueJob
from taskforge.resources import wait_first

log = logging.getLogger("taskforge.scheduler")

NOTIFY_CHANNEL = "taskforge_jobs"
PAUSED_REFRESH_SECONDS = 1.0
# A round that sent at least this many jobs (but not a full batch) is followed by the linger.
LINGER_MIN_SENT = 16
# PostgreSQL errors a round retries after. InternalClientError: the held connection was
# killed while idle and asyncpg, holding the server's FATAL message but not yet the closed
# socket, refuses the next statement ("another operation is in progress").
DISPATCH_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class Dispatcher:
    """Sends due jobs in batches; wakes on NOTIFY, on the next due time, or every poll interval."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: LaneClient,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        linger: float = 0.0,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.linger = linger
        self.wake = asyncio.Event()
        self._known_queues: set[str] = set()
        self._paused: list[str] = []
        self._capped: list[str] = []
        self._paused_at = 0.0
        self._session: asyncpg.Connection | None = None  # run()'s, see _session_round
        self._begun = False  # whether _session is in a transaction begun ahead
        self._next_due_at: float | None = None  # monotonic; None: nothing waits (or not asked)

    async def _refresh_paused(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._paused_at >= PAUSED_REFRESH_SECONDS:
            controls = await lifecycle.queue_controls(conn)
            self._paused, self._capped = controls.paused, controls.capped
            self._paused_at = now

    async def dispatch_once(self) -> int:
        """Send one batch of due jobs in a transaction of its own; returns how many were sent."""
        try:
            return await self._session_round()
        finally:
            await self._end_session()

    async def _round(self, conn: asyncpg.Connection) -> list[DueJob]:
        """One dispatch inside the open transaction of ``conn``: lock due rows, send them,
        mark them queued. The caller commits (or rolls back, on any error)."""
        await self._refresh_paused(conn)
        # Capped queues first, only into the room under their caps; then the rest.
        due = await lifecycle.select_due_capped(conn, self._capped, self.batch_size)
        dispatch_lock = lifecycle.new_dispatch_lock()
        # A capped queue's due jobs may be waiting for room: the next due time leaves them
        # to the poll, so that they are looked for, never spun on.
        skip = [*self._paused, *self._capped]
        due += await lifecycle.select_due(conn, self.batch_size - len(due), skip, dispatch_lock)
        # A full batch goes again at once; any other round learns when to look next, from
        # the statement that marks its rows (after them: they no longer count as waiting).
        # Asked inside the round, its portal closes at the COMMIT: the wait holds no snapshot.
        ask = skip if len(due) < self.batch_size else None
        until = None
        if due:
            stream_ids = await self._send(due, dispatch_lock)
            until = await lifecycle.mark_queued_next_due(conn, due, stream_ids, ask)
        elif ask is not None:
            until = await lifecycle.seconds_until_next_due(conn, ask)
        self._next_due_at = None if until is None else time.monotonic() + until
        return due

    def _count(self, due: Sequence[DueJob]) -> None:
        if not due:
            return
        metrics.DISPATCH_BATCH.observe(len(due))
        for queue, count in Counter(job.queue for job in due).items():
            metrics.JOBS_DISPATCHED.labels(queue).inc(count)

    async def _send(self, due: Sequence[DueJob], dispatch_lock: int) -> list[str]:
        new_queues = {job.queue for job in due} - self._known_queues
        if new_queues:
            await streams.ensure_groups(self.redis, new_queues)
            self._known_queues |= new_queues
        # With tracing on, each entry carries its own ``send`` span's context (a child of the
        # row's); with it off, the row's context is passed through as stored.
        batch = spans.send_batch(due)
        messages = []
        for index, job in enumerate(due):
            headers = batch.headers[index] if batch is not None else {}
            if batch is None and job.traceparent:
                headers["traceparent"] = job.traceparent
                if job.tracestate:
                    headers["tracestate"] = job.tracestate
            messages.append(
                (
                    job.queue,
                    streams.encode(
                        job.id,
                        job.type,
                        job.queue,
                        job.attempt,
                        job.priority,
                        job.timeout_seconds,
                        headers,
                        dispatch_lock,
                    ),
                )
            )
        if batch is None:
            return await streams.send(self.redis, messages)
        try:
            stream_ids = await streams.send(self.redis, messages)
        except BaseException as exc:
            batch.failed(exc)
            raise
        batch.sent(stream_ids)
        return stream_ids

    async def _session_round(self) -> int:
        """One round on the connection :meth:`run` holds; returns how many were sent.

        The round ends with "COMMIT; BEGIN" (one round trip), so the next round starts with
        its due-rows query, and a trickle's round is three round trips: the due rows, mark
        queued (with the next due time), commit. A transaction begun ahead holds no snapshot
        and no transaction id until its first statement, and the dispatch's statements tell
        time by ``statement_timestamp()``, not by ``now()``, its start (migration 0013).
        """
        if self._session is None:
            self._session = await self.pool.acquire()
        if not self._begun:
            await self._session.execute("BEGIN")
        self._begun = False  # from here, an error leaves it to _end_session to roll back
        due = await self._round(self._session)
        await self._session.execute("COMMIT; BEGIN")
        self._begun = True
        self._count(due)
        return len(due)

    async def _end_session(self) -> None:
        """Give the held connection back to the pool, any open transaction rolled back."""
        conn, self._session, self._begun = self._session, None, False
        if conn is not None:
            await _rollback(conn)
            await self.pool.release(conn)  # a no-op for one the pool took back when it closed

    def _sleep_time(self) -> float:
        """How long to wait for the next round: until the next due time the last round
        learnt, at most the poll interval, at least 5 ms (never a spin)."""
        if self._next_due_at is None:
            return self.poll_interval
        until = self._next_due_at - time.monotonic()
        return min(max(until, 0.005), self.poll_interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; store errors are logged and retried with backoff."""
        backoff = 0.1
        try:
            while not stop.is_set():
                # Cleared before looking, not after: a NOTIFY that lands while this round
                # runs must wake the next one, or its job would wait for the poll interval.
                self.wake.clear()
                try:
                    sent = await self._session_round()
                    backoff = 0.1
                    if sent >= self.batch_size:
                        continue  # more are due: keep going without waiting
                    if sent >= LINGER_MIN_SENT and self.linger > 0:
                        await self._linger(stop)
                    if self.wake.is_set():
                        continue  # new jobs arrived while this round ran: go again at once
                    delay = self._sleep_time()
                except (*DISPATCH_ERRORS, RedisError) as exc:
                    # The transaction rolls back; the rows are still due and nothing is lost.
                    await self._end_session()
                    store = "redis" if isinstance(exc, RedisError) else "postgres"
                    metrics.STORE_ERRORS.labels(store, "scheduler").inc()
                    self.wake.clear()  # back off for real; new work waits for the retry
                    if store == "redis":
                        self._known_queues.clear()  # Redis may have restarted empty
                    log.warning(
                        "dispatch failed; retrying",
                        extra={"action": "dispatch.error", "error": repr(exc), "retry_in": backoff},
                    )
                    delay = backoff
                    backoff = min(backoff * 2, 5.0)
                await wait_first(stop.wait(), self.wake.wait(), timeout=delay)
        finally:
            await self._end_session()

    async def _linger(self, stop: asyncio.Event) -> None:
        """Let the next round gather jobs: under load, rounds back to back carry a few jobs
        each, and every round costs the same downstream (the dispatch statements planned and
        run, a commit, every worker woken, a claim, a finish and an ack each). At a trickle
        rounds carry one job and never linger, so low-load latency is untouched."""
        await wait_first(stop.wait(), timeout=self.linger)

    def notified(self, *_: object) -> None:
        """LISTEN callback: something new may be due. Many notifications make one wake-up."""
        self.wake.set()


async def _rollback(conn: asyncpg.Connection) -> None:
    """End the open transaction before the pool takes the connection back (asyncpg would
    roll it back too, reporting an error). A connection that broke is left to the pool: it
    has taken it back already (asyncpg releases a pool connection that closes) or replaces
    it on release. One with no transaction open (a round that committed) gets no ROLLBACK,
    which PostgreSQL would answer with a WARNING in its log."""
    try:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except DISPATCH_ERRORS:
        pass


async def listen(pool_url: str, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    """Hold a LISTEN connection (reconnecting after failures) that wakes the dispatcher."""
    backoff = 0.2
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(
                pool_url, server_settings={"application_name": "taskforge-scheduler"}
            )
            await conn.add_listener(NOTIFY_CHANNEL, dispatcher.notified)
            backoff = 0.2
            dispatcher.wake.set()  # catch anything inserted while we were not listening
            while not stop.is_set() and not conn.is_closed():
                await wait_first(stop.wait(), timeout=1.0)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "LISTEN connection lost; reconnecting",
                extra={"action": "listen.error", "error": repr(exc), "retry_in": backoff},
            )
            await wait_first(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
