"""Start taskforge deployables as real processes for end-to-end tests, and always stop them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from taskforge.embedded import free_port
from tests.conftest import Stores

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Deployable:
    name: str
    process: subprocess.Popen[bytes]
    ops_port: int
    log: Path


@dataclass
class System:
    """Running deployables and where to reach them."""

    api_url: str
    procs: dict[str, Deployable] = field(default_factory=dict)

    async def ready(self, timeout: float = 30) -> None:
        """Wait until every deployable answers /readyz with 200."""
        await asyncio.gather(*(wait_ready(d.ops_port, timeout) for d in self.procs.values()))

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs[name].process
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout)


def start(
    name: str,
    command: str,
    stores: Stores,
    tmp: Path,
    env: dict[str, str] | None = None,
    http_port: int | None = None,
) -> Deployable:
    ops_port = free_port()
    log = tmp / f"{name}.log"
    environment = {
        **os.environ,
        "TASKFORGE_POSTGRES_URL": stores.postgres_url,
        "TASKFORGE_REDIS_URL": stores.redis_url,
        "TASKFORGE_OPS_PORT": str(ops_port),
        "TASKFORGE_HTTP_PORT": str(http_port or free_port()),
        "TASKFORGE_POLL_INTERVAL": "200ms",
        "TASKFORGE_BACKOFF_BASE": "50ms",
        "TASKFORGE_BACKOFF_MAX": "200ms",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "taskforge", command],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Deployable(name, process, ops_port, log)


async def wait_ready(port: int, timeout: float = 30) -> None:
    """Poll /readyz until 200 (the stores are reachable) or fail."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"port {port} not ready after {timeout}s")


@contextmanager
def running_system(
    stores: Stores,
    tmp: Path,
    *,
    workers: int = 1,
    reaper: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    """api, scheduler, N workers (and the reaper) as separate processes."""
    http_port = free_port()
    system = System(f"http://127.0.0.1:{http_port}")
    plan = [("api", "api"), ("scheduler", "scheduler")]
    plan += [(f"worker-{i}", "worker") for i in range(workers)]
    if reaper:
        plan.append(("reaper", "reaper"))
    try:
        for name, command in plan:
            system.procs[name] = start(name, command, stores, tmp, env, http_port)
        yield system
    finally:
        for deployable in system.procs.values():
            if deployable.process.poll() is None:
                deployable.process.send_signal(signal.SIGTERM)
        for deployable in system.procs.values():
            try:
                deployable.process.wait(30)
            except subprocess.TimeoutExpired:
                deployable.process.kill()
                deployable.process.wait()


TERMINAL = {"completed", "dead", "cancelled"}


async def wait_finished(
    session: aiohttp.ClientSession, api: str, ids: list[str], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until every job is terminal; the jobs by id."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    found: dict[str, Any] = {}
    while pending:
        for job_id in list(pending):
            async with session.get(f"{api}/v1/jobs/{job_id}") as response:
                job = await response.json()
            if job["status"] in TERMINAL:
                found[job_id] = job
                pending.remove(job_id)
        if pending:
            assert time.monotonic() < deadline, f"{len(pending)} jobs not finished after {timeout}s"
            await asyncio.sleep(0.1)
    return found
