"""The ops server every deployable runs: ``/healthz``, ``/readyz`` and ``/metrics``.

Liveness answers as long as the event loop does; readiness asks the deployable's own
checks (PostgreSQL reachable, Redis reachable, ...) so Kubernetes stops routing to a
process whose stores are down without restarting it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises (any exception) when the thing it checks is not usable."""

READINESS_TIMEOUT = 2.0


async def run_checks(checks: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    """Run every check concurrently; ``"ok"`` or the error text for each."""

    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), READINESS_TIMEOUT)
        except Exception as exc:  # any failure means not ready; the text says which
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


def add_ops_routes(app: web.Application, checks: Mapping[str, ReadinessCheck]) -> None:
    """Mount the health, readiness and metrics endpoints on ``app``."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        results = await run_checks(checks)
        ready = all(value == "ok" for value in results.values())
        return web.json_response(
            {"status": "ok" if ready else "unavailable", "checks": results},
            status=200 if ready else 503,
        )

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


@asynccontextmanager
async def serve_ops(
    host: str, port: int, checks: Mapping[str, ReadinessCheck]
) -> AsyncIterator[web.AppRunner]:
    """Serve the ops endpoints on ``host:port`` for the duration of the block."""
    app = web.Application()
    add_ops_routes(app, checks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()
