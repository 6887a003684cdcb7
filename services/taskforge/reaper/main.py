"""``taskforge reaper``: reclaim rounds every ``TASKFORGE_REAPER_INTERVAL`` and upkeep
(retention, trimming, consumer cleanup) every ``UPKEEP_INTERVAL``, as one aiohttp app (ops
port only); beside them, the VACUUM of jobs where autovacuum is off (:mod:`.vacuum`). Several
replicas may run: every step is safe to run concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from taskforge import metrics, resources
from taskforge.config import Settings
from taskforge.reaper.reclaim import Reclaimer
from taskforge.reaper.upkeep import upkeep_once
from taskforge.reaper.vacuum import vacuum_loop
from taskforge.resources import POOL, REDIS, SETTINGS, wait_first

log = logging.getLogger("taskforge.reaper")

UPKEEP_INTERVAL = 30.0
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)


async def reap(app: web.Application, stop: asyncio.Event) -> None:
    """Run rounds until ``stop``; a store error fails the round, which is retried with backoff."""
    settings = app[SETTINGS]
    reclaimer = Reclaimer(app[POOL], app[REDIS], settings)
    next_upkeep = time.monotonic()
    backoff = 0.1
    while not stop.is_set():
        try:
            await reclaimer.reclaim_once()
            if time.monotonic() >= next_upkeep:
                await upkeep_once(app[POOL], app[REDIS], settings, await reclaimer.queues())
                next_upkeep = time.monotonic() + UPKEEP_INTERVAL
            delay = settings.reaper_interval
            backoff = 0.1
        except STORE_ERRORS as exc:
            store = "redis" if isinstance(exc, RedisError) else "postgres"
            metrics.STORE_ERRORS.labels(store, "reaper").inc()
            if store == "postgres":
                reclaimer.postgres_outage()
            log.warning(
                "reaper round failed; retrying",
                extra={"action": "reaper.error", "error": repr(exc), "retry_in": backoff},
            )
            delay = backoff
            backoff = min(backoff * 2, 5.0)
        await wait_first(stop.wait(), timeout=delay)


def create_app(settings: Settings) -> web.Application:
    """The reaper application: stores and the reaper loop."""
    app = resources.base_app(settings)
    app.cleanup_ctx.append(resources.postgres_ctx)
    app.cleanup_ctx.append(resources.redis_ctx)
    app.cleanup_ctx.append(resources.background("reaper", reap))
    app.cleanup_ctx.append(resources.background("vacuum", vacuum_loop))
    return app


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the reaper until SIGTERM."""
    return resources.serve("reaper", settings, create_app)
