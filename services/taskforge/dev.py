"""``taskforge dev``: the whole system on one machine, each deployable its own process.

PostgreSQL and Redis come from TASKFORGE_POSTGRES_URL / TASKFORGE_REDIS_URL when set, else
embedded ones whose data stays under ``--data-dir`` (so jobs survive a restart). Ctrl-C (or
SIGTERM) stops the deployables gracefully, then the embedded stores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from taskforge import embedded
from taskforge.config import Settings
from taskforge.store import (
    CONNECT_ERRORS,
    MigrationMismatch,
    describe_connect_error,
    migrate_url,
)

STOP_TIMEOUT = 30.0


@dataclass
class Child:
    """One deployable process."""

    name: str
    process: subprocess.Popen[bytes]


def _env(
    settings: Settings, postgres_url: str, redis_url: str, ops_port: int, service: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TASKFORGE_POSTGRES_URL=postgres_url,
        TASKFORGE_REDIS_URL=redis_url,
        TASKFORGE_OPS_PORT=str(ops_port),
        TASKFORGE_HTTP_PORT=str(settings.http_port),
        TASKFORGE_LOG_FORMAT=os.environ.get("TASKFORGE_LOG_FORMAT", "console"),
    )
    env.setdefault("OTEL_SERVICE_NAME", f"taskforge-{service}")
    return env


def _start(name: str, command: str, env: dict[str, str]) -> Child:
    process = subprocess.Popen(
        [sys.executable, "-m", "taskforge", command], env=env, start_new_session=True
    )
    return Child(name, process)


def _stop_all(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            print(f"taskforge dev: {child.name} did not stop in time; killing it", file=sys.stderr)
            child.process.kill()


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Start stores (if needed) and deployables; supervise until Ctrl-C."""
    data_dir = Path(args.data_dir)
    want_pg = not os.environ.get("TASKFORGE_POSTGRES_URL")
    want_redis = not os.environ.get("TASKFORGE_REDIS_URL")
    stores = embedded.EmbeddedStores()
    if want_pg or want_redis:
        print(f"taskforge dev: starting embedded stores under {data_dir}/ ...", flush=True)
        try:
            stores = embedded.start(data_dir, postgres=want_pg, redis=want_redis)
        except embedded.EmbeddedUnavailable as exc:
            print(f"taskforge dev: {exc}", file=sys.stderr)
            return 2
    postgres_url = stores.postgres_url or settings.postgres_url
    redis_url = stores.redis_url or settings.redis_url
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            asyncio.run(migrate_url(postgres_url))
        except CONNECT_ERRORS as exc:
            print(
                f"taskforge dev: {describe_connect_error(exc)}. The server, database and user "
                "come from TASKFORGE_POSTGRES_URL (unset, dev starts an embedded PostgreSQL).",
                file=sys.stderr,
            )
            return 1
        except MigrationMismatch as exc:
            print(f"taskforge dev: {exc}", file=sys.stderr)
            return 2
        # --api and --workers are at least 1 (argtypes.positive_int refuses anything less).
        plan = [(f"api-{i + 1}" if args.api > 1 else "api", "api") for i in range(args.api)]
        plan.append(("scheduler", "scheduler"))
        plan += [(f"worker-{i + 1}", "worker") for i in range(args.workers)]
        if not args.no_reaper:
            plan.append(("reaper", "reaper"))
        ops_ports = {}
        for index, (name, command) in enumerate(plan):
            ops_port = settings.ops_port + index
            ops_ports[name] = ops_port
            children.append(
                _start(name, command, _env(settings, postgres_url, redis_url, ops_port, command))
            )
        print(
            "\ntaskforge dev is up:\n"
            f"  api        http://127.0.0.1:{settings.http_port}/v1/jobs\n"
            f"  dashboard  http://127.0.0.1:{settings.http_port}/ui/\n"
            f"  postgres   {postgres_url}\n"
            f"  redis      {redis_url}\n"
            + "".join(
                f"  {name:<10} metrics http://127.0.0.1:{port}/metrics\n"
                for name, port in ops_ports.items()
            )
            + "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for child in children:
                code = child.process.poll()
                if code is not None:
                    print(
                        f"taskforge dev: {child.name} exited with {code}; stopping", file=sys.stderr
                    )
                    stopping = True
                    break
            time.sleep(0.2)
        return 0
    finally:
        print("taskforge dev: stopping ...", flush=True)
        _stop_all(children)
        stores.stop()
        print("taskforge dev: stopped", flush=True)
