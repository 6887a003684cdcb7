"""``taskforge worker``: the consumer loop as an aiohttp app (ops port only)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from aiohttp import web

from taskforge import resources
from taskforge.config import Settings
from taskforge.resources import POOL, REDIS, SETTINGS
from taskforge.worker import registry as registry_module
from taskforge.worker.consumer import Worker

REGISTRY = web.AppKey("registry", registry_module.Registry)
WORKER = web.AppKey("worker", Worker)


def worker_name() -> str:
    """Consumer name: the pod's hostname plus the pid, unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def _consume(app: web.Application, stop: asyncio.Event) -> None:
    worker = Worker(app[POOL], app[REDIS], app[REGISTRY], app[SETTINGS], worker_name())
    app[WORKER] = worker
    await worker.run(stop)


def create_app(settings: Settings, registry: registry_module.Registry) -> web.Application:
    """The worker application: stores and the consumer loop."""
    app = resources.base_app(settings)
    app[REGISTRY] = registry
    app.cleanup_ctx.append(resources.postgres_ctx)
    app.cleanup_ctx.append(resources.redis_ctx)
    app.cleanup_ctx.append(resources.background("consumer", _consume))
    return app


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Load the handlers (failing fast on a bad TASKFORGE_HANDLERS), then consume until SIGTERM."""
    try:
        registry = registry_module.load(settings.handlers)
    except registry_module.HandlerImportError as exc:
        print(f"taskforge worker: {exc}", file=sys.stderr)
        return 2
    return resources.serve("worker", settings, lambda s: create_app(s, registry))
