"""Group commit for single submits: concurrent ``POST /v1/jobs`` requests share one INSERT.

One request, one transaction cost PostgreSQL about 1 ms of CPU per job on this machine (a
commit, a WAL flush, a snapshot and a round trip each) and the api a third of its time in
asyncpg; the batch path costs 0.2 ms per job. So requests that arrive while an insert is in
flight wait for the next one, and that one inserts them all (up to ``MAX_BATCH``) with
:func:`taskforge.lifecycle.submit_batch`. Nothing is answered before its own row is
durable, so the guarantee is the same as one transaction per request; a failed insert fails
every request it carried, each with the store's own error. A request that arrives when a
flusher is free goes out at once: at low load there is no waiting for company.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from taskforge import lifecycle, metrics
from taskforge.lifecycle import SubmitResult
from taskforge.resources import POOL

# Inserts in flight at once. One: the requests that arrive while it commits and flushes all
# go in the next, so batches grow with the load and PostgreSQL pays one insert, commit and
# WAL flush for more of them. Measured with the whole system on 2 cores, 64 requests in
# flight, alternated: one flusher ahead of two in 5 of 5 pairs (single submits 4,168-4,982
# → 4,906-5,250 jobs/s, CPU per job -3 to -16%), four behind two. (When the api was three
# times slower, 1, 2 and 4 measured within noise.)
FLUSHERS = 1
MAX_BATCH = 500

Waiting = tuple[dict[str, Any], str | None, "asyncio.Future[SubmitResult]"]


class Submitter:
    """Coalesces concurrent single submits into batched inserts."""

    def __init__(
        self, pool: asyncpg.Pool, flushers: int = FLUSHERS, max_batch: int = MAX_BATCH
    ) -> None:
        self.pool = pool
        self.flushers = flushers
        self.max_batch = max_batch
        self._waiting: list[Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, values: dict[str, Any], request_hash: str | None) -> SubmitResult:
        """Store one pending job (see :func:`taskforge.lifecycle.submit`) once its batch
        has committed."""
        future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, request_hash, future))
        if len(self._tasks) < self.flushers:
            task = asyncio.create_task(self._flush(), name="submit-flush")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            metrics.SUBMIT_BATCH_SIZE.observe(len(batch))
            try:
                async with self.pool.acquire() as conn:
                    outcomes = await lifecycle.submit_batch(
                        conn, [values for values, _, _ in batch], [h for _, h, _ in batch]
                    )
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                # The loop is closing under us: no request may wait for an answer forever,
                # and none is told its job is stored.
                for _, _, future in batch + self._waiting:
                    future.cancel()
                raise
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                # A request whose client went away was cancelled; its job is stored anyway,
                # as it would be had the disconnect come a moment after the commit.
                if not future.done():
                    future.set_result(outcome)

    async def drain(self) -> None:
        """Wait for the inserts in flight (at shutdown, after the last request)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


SUBMITTER = web.AppKey("submitter", Submitter)


async def submitter_ctx(app: web.Application) -> AsyncIterator[None]:
    """The submitter for the life of the app (after the pool exists, before it closes)."""
    submitter = Submitter(app[POOL])
    app[SUBMITTER] = submitter
    yield
    with contextlib.suppress(Exception):
        await submitter.drain()
