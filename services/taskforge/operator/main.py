"""``taskforge operator``: kopf in-process, watching one namespace, plus the ops server.

One replica, standalone (no peering): two operators would fight over ``/scale``, so the chart
runs exactly one with a ``Recreate`` rollout. kopf handles SIGTERM/SIGINT itself: it stops
the daemons, then :func:`operate` closes the Redis and HTTP clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Coroutine
from typing import Any

import kopf
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from taskforge import streams
from taskforge.config import ConfigError, Settings
from taskforge.logs import configure_logging
from taskforge.operator.autoscaler import Runtime
from taskforge.operator.handlers import build_registry, operator_settings
from taskforge.operator.kube import Credentials, KubeClient
from taskforge.operator.metrics import Metrics, default_metrics
from taskforge.operator.settings import OperatorSettings, load_operator_settings
from taskforge.ops import serve_ops

logger = logging.getLogger("taskforge.operator")


async def operate(
    *,
    redis_url: str,
    namespace: str,
    metrics: Metrics | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or SIGTERM/SIGINT when it is None).

    kopf owns the loop it runs in: when it stops, it cancels every task started after it.
    Tests therefore run this in a thread of its own (``threading.Event`` flags work there).
    """
    # No client-side retries: a failed poll is reported and the next poll is the retry.
    redis = streams.connect(
        redis_url,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
    )
    credentials = Credentials()
    kube = KubeClient(credentials)
    runtime = Runtime(redis=redis, kube=kube, metrics=metrics or default_metrics())
    try:
        await kopf.operator(
            registry=build_registry(runtime, credentials),
            settings=operator_settings(),
            standalone=True,
            clusterwide=False,
            namespaces=[namespace],
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await kube.close()
        await redis.aclose()


async def serve(
    settings: Settings,
    options: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """The operator with its ops server on ``settings.ops_port``."""
    ready = asyncio.Event()
    probe = streams.connect(settings.redis_url, socket_timeout=2.0)

    async def redis_check() -> None:
        await probe.ping()

    async def kopf_check() -> None:
        if not ready.is_set():
            raise RuntimeError("kopf is still starting")

    checks = {"redis": redis_check, "kubernetes": kopf_check}
    try:
        async with serve_ops("0.0.0.0", settings.ops_port, checks):
            logger.info(
                "operator started",
                extra={"action": "start", "namespace": options.namespace},
            )
            await operate(
                redis_url=settings.redis_url,
                namespace=options.namespace,
                stop_flag=stop_flag,
                ready_flag=ready,
            )
    finally:
        await probe.aclose()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``taskforge operator``; the exit code of the process."""
    configure_logging("operator", settings.log_level, settings.log_format)
    try:
        options = load_operator_settings()
    except ConfigError as exc:
        print(f"taskforge: configuration error: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(settings, options))
    return 0
