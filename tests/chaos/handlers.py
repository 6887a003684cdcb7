"""Handlers the chaos tests' workers load (``TASKFORGE_HANDLERS=tests.chaos.handlers``).

``chaos.work`` sleeps for ``payload.seconds`` and records when each run starts and ends, so a
test can count re-runs and prove no job ran twice at the same time. Records go to an
append-only file per worker process under ``CHAOS_RUNS_DIR`` rather than a table: they must
survive the very PostgreSQL restart under test, and a SIGKILL (one ``write`` per line).
Times are ``time.monotonic()``, one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from taskforge.jobs import Json
from taskforge.worker.registry import JobContext, Registry

registry = Registry()

_fd: int | None = None


def _record(ctx: JobContext, event: str, **extra: object) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["CHAOS_RUNS_DIR"], f"runs-{os.getpid()}.jsonl")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = {
        "job": str(ctx.job_id),
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "event": event,
        "t": time.monotonic(),
        **extra,
    }
    os.write(_fd, (json.dumps(line) + "\n").encode())


@registry.job("chaos.work")
async def work(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Sleep ``seconds`` (default 0.5), recording the run's start and end."""
    seconds = payload.get("seconds", 0.5)
    assert isinstance(seconds, int | float)
    _record(ctx, "start")
    cancelled = True
    try:
        await asyncio.sleep(float(seconds))
        cancelled = False
    finally:
        _record(ctx, "end", cancelled=cancelled)
    return {"pid": os.getpid()}
