"""Built-in job types, always registered: for trying the system out and for tests."""

from __future__ import annotations

import asyncio

from taskforge.jobs import Json
from taskforge.worker.registry import Fail, JobContext, Registry

builtins = Registry()


@builtins.job("ping")
async def ping(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Log and return the payload's ``message``; ``"fail": true`` fails the attempt retryably."""
    if payload.get("fail"):
        raise RuntimeError("ping asked to fail (payload fail=true)")
    message = payload.get("message", "pong")
    # "message" is reserved by logging's LogRecord; the field is ping_message.
    ctx.logger.info("ping", extra={"action": "job.ping", "ping_message": message})
    return {"message": message}


@builtins.job("sleep")
async def sleep(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Sleep ``seconds`` (default 1) and return how long it slept."""
    seconds = payload.get("seconds", 1)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise Fail("sleep needs payload.seconds, a number >= 0")
    await asyncio.sleep(float(seconds))
    return {"slept": seconds}


@builtins.job("fail")
async def fail(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Always fail retryably (until attempts run out)."""
    raise RuntimeError(str(payload.get("message", "fail job always fails")))


@builtins.job("dead")
async def dead(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Fail terminally at once."""
    raise Fail(str(payload.get("message", "dead job fails terminally")))


@builtins.job("noop")
async def noop(ctx: JobContext, payload: dict[str, Json]) -> Json:
    """Do nothing and return nothing: what benchmarks measure is the system around it."""
    return None
