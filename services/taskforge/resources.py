"""What every deployable's aiohttp application shares: typed app keys, the store clients as
``cleanup_ctx`` resources, readiness checks, and the runner with uvloop and signal handling.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
from aiohttp import web

from taskforge import store, streams, telemetry
from taskforge.config import ConfigError, Settings
from taskforge.lanes import LaneClient
from taskforge.logs import configure_logging
from taskforge.ops import ReadinessCheck, add_ops_routes

log = logging.getLogger("taskforge")

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", LaneClient)
CHECKS = web.AppKey("checks", dict[str, ReadinessCheck])
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
SERVICE = web.AppKey("service", str)
"""The deployable's name (``api``, ``worker``, …); set by :func:`serve`."""
BATCH_STATEMENTS = web.AppKey("batch_statements", bool)
"""False for an app whose statements touch single rows (see :func:`store.create_pool`)."""


def base_app(settings: Settings, **kwargs: Any) -> web.Application:
    """An application holding the settings and an (initially empty) readiness check table."""
    app = web.Application(**kwargs)
    app[SETTINGS] = settings
    app[CHECKS] = {}
    app[SHUTDOWN] = asyncio.Event()
    return app


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    """A migrated asyncpg pool for the life of the app; PostgreSQL in the readiness checks."""
    settings = app[SETTINGS]
    pool = await store.connect_with_retry(
        settings.postgres_url,
        max_size=settings.pool_size,
        batch_statements=app.get(BATCH_STATEMENTS, True),
        application_name=f"taskforge-{app.get(SERVICE, 'app')}",
    )
    app[POOL] = pool

    async def check() -> None:
        async with pool.acquire(timeout=1.5) as conn:
            await conn.fetchval("SELECT 1")

    app[CHECKS]["postgres"] = check
    yield
    await pool.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """A Redis client for the life of the app; Redis in the readiness checks."""
    client = streams.connect(app[SETTINGS].redis_url)
    app[REDIS] = client

    async def check() -> None:
        await client.ping()

    app[CHECKS]["redis"] = check
    yield
    await client.aclose()


def background(
    name: str, loop: Callable[[web.Application, asyncio.Event], Coroutine[Any, Any, None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx running ``loop(app, stop)`` as a named task; cleanup sets ``stop`` and waits.

    If the loop dies of an error, the process stops instead of limping on without it.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(loop(app, stop), name=name)

        def died(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and done.exception() is not None and not stop.is_set():
                log.error(
                    "background loop died; stopping",
                    exc_info=done.exception(),
                    extra={"action": "loop.died", "loop": name},
                )
                app[SHUTDOWN].set()

        task.add_done_callback(died)
        yield
        stop.set()
        try:
            await task
        except Exception:
            log.exception("background loop failed", extra={"action": "loop.failed", "loop": name})

    return ctx


async def wait_first(*aws: Awaitable[object], timeout: float) -> None:
    """Wait until the first of ``aws`` completes or ``timeout`` passes; cancel the rest.

    The background loops' sleep: ``wait_first(stop.wait(), timeout=5)`` returns at once on
    shutdown, and a loop may add its own wake-up event beside ``stop``.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def ops_app(main: web.Application) -> web.Application:
    """The ops application (health, readiness, metrics) reading the main app's checks."""
    app = web.Application()
    checks: dict[str, ReadinessCheck] = main[CHECKS]
    add_ops_routes(app, checks)
    return app


def freeze_startup_heap() -> int:
    """Collect the garbage of startup, then exempt everything alive from the cyclic GC.

    A deployable starts with ~70k long-lived objects (modules, classes, the OpenTelemetry,
    protobuf and aiohttp machinery) and then allocates short-lived ones per job. Each full
    collection traversed them all: 25-50 ms of CPU with the event loop stopped, a fifth of
    the api's CPU and 15% of a worker's during a drain, and a pause on the way of every job
    in flight. Frozen objects are still freed by reference counting; only a reference cycle
    among them would outlive its use (the pool's first connections, if replaced: bounded).
    Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def serve(
    service: str,
    settings: Settings,
    factory: Callable[[Settings], web.Application],
    *,
    port: int | None = None,
) -> int:
    """Run a deployable: its app on ``port`` (or only ops), ops on the ops port, until SIGTERM."""
    configure_logging(service, settings.log_level, settings.log_format)
    try:
        tracing = telemetry.setup(service)
    except ConfigError as exc:
        print(f"taskforge {service}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional on platforms without it
        pass

    async def start() -> None:
        app = factory(settings)
        app[SERVICE] = service
        ops = ops_app(app)

        async def ops_ctx(_: web.Application) -> AsyncIterator[None]:
            runner = web.AppRunner(ops, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.http_host, settings.ops_port).start()
            log.info(
                "ops server listening",
                extra={"action": "ops.listen", "port": settings.ops_port},
            )
            yield
            await runner.cleanup()

        # The ops port comes up first so liveness answers while the stores connect.
        app.cleanup_ctx.insert(0, ops_ctx)
        if tracing is not None:
            # First in, last out: spans of the loops' final moments are flushed too.
            app.cleanup_ctx.insert(0, telemetry.tracing_ctx)
        shutdown = app[SHUTDOWN]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, shutdown.set)
        # Not ready until every resource is up and the main port listens: the stores' own
        # checks only exist once their cleanup_ctx ran, and an empty table would read ready.
        started = asyncio.Event()

        async def started_check() -> None:
            if not started.is_set():
                raise RuntimeError("starting")

        app[CHECKS]["started"] = started_check
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if port is not None:
            # SO_REUSEPORT: several api processes on one host share the port (taskforge dev
            # --api N); the kernel spreads connections across them.
            await web.TCPSite(runner, settings.http_host, port, reuse_port=True).start()
            log.info("listening", extra={"action": "http.listen", "port": port})
        started.set()
        frozen = freeze_startup_heap()
        log.info(
            "started",
            extra={"action": "service.start", "service": service, "gc_frozen": frozen},
        )
        try:
            await shutdown.wait()
            log.info("stopping", extra={"action": "service.stopping", "service": service})
        finally:
            # cleanup_ctx unwinds in reverse: background loops stop before their stores close.
            await runner.cleanup()
            log.info("stopped", extra={"action": "service.stop", "service": service})

    try:
        asyncio.run(start())
    except KeyboardInterrupt:
        pass
    except store.MigrationMismatch as exc:
        # Not retried: the database will not change by waiting (the pod's restarts repeat it).
        print(f"taskforge {service}: {exc}", file=sys.stderr)
        return 2
    return 0
