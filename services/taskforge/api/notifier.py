"""Wakes the dispatcher after actions that make jobs due: retry, replay, resume, cap changes.

Submits carry their own NOTIFY in the insert statement (one per batch; see
:data:`taskforge.lifecycle.admin.INSERT_BATCH`). Everything else pokes this notifier after its
commit; one connection sends the NOTIFYs, at most one at a time, so any number of pokes in
flight coalesce into one wake-up (a NOTIFY takes a database-wide lock at commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from taskforge import lifecycle
from taskforge.resources import POOL

log = logging.getLogger("taskforge.api")

MIN_INTERVAL = 0.002


class Notifier:
    """Coalesces pokes into NOTIFYs on the ``taskforge_jobs`` channel."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Something due was committed: the dispatcher should look soon."""
        self._poked.set()

    async def run(self) -> None:
        while True:
            await self._poked.wait()
            self._poked.clear()
            try:
                async with self.pool.acquire() as conn:
                    await lifecycle.notify_dispatcher(conn)
                # Under load the dispatcher is busy anyway; at most one NOTIFY per interval
                # keeps the notifier from spending a round trip per request.
                await asyncio.sleep(MIN_INTERVAL)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The dispatcher also polls; a lost wake-up only delays dispatch by a poll.
                log.warning("notify failed", extra={"action": "notify.error", "error": repr(exc)})
                await asyncio.sleep(0.5)


NOTIFIER = web.AppKey("notifier", Notifier)


async def notifier_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the notifier for the life of the app (after the pool exists)."""
    notifier = Notifier(app[POOL])
    app[NOTIFIER] = notifier
    task = asyncio.create_task(notifier.run(), name="notifier")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
