"""``taskforge scheduler``: the dispatcher and the backlog publisher as one aiohttp app."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from taskforge import resources
from taskforge.config import Settings
from taskforge.resources import POOL, REDIS, SETTINGS
from taskforge.scheduler import backlog, cron
from taskforge.scheduler.dispatcher import Dispatcher, listen


async def _dispatch(app: web.Application, stop: asyncio.Event) -> None:
    settings = app[SETTINGS]
    dispatcher = Dispatcher(
        app[POOL],
        app[REDIS],
        batch_size=settings.dispatch_batch,
        poll_interval=settings.poll_interval,
        linger=settings.dispatch_linger,
    )
    listener = asyncio.create_task(listen(settings.postgres_url, dispatcher, stop), name="listen")
    try:
        await dispatcher.run(stop)
    finally:
        stop.set()
        await listener


async def _publish_backlog(app: web.Application, stop: asyncio.Event) -> None:
    await backlog.run(app[POOL], app[REDIS], stop, app[SETTINGS].queues)


def create_app(settings: Settings) -> web.Application:
    """The scheduler application: stores, dispatcher, backlog publisher, cron schedules."""
    app = resources.base_app(settings)
    app.cleanup_ctx.append(resources.postgres_ctx)
    app.cleanup_ctx.append(resources.redis_ctx)
    app.cleanup_ctx.append(resources.background("dispatcher", _dispatch))
    app.cleanup_ctx.append(resources.background("backlog", _publish_backlog))
    app.cleanup_ctx.append(resources.background("cron", cron.run))
    return app


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the scheduler until SIGTERM."""
    return resources.serve("scheduler", settings, create_app)
