"""How an attempt ended, as the :class:`~taskforge.lifecycle.Outcome` the finisher records.

The rules: ``Retry`` retries after its own delay, ``Fail`` is dead at once, any other error
retries with exponential backoff, and every failure of the last attempt is dead; a result must
be JSON. A timeout is a failure like any other (the worker's sweep stops the handler).
"""

from __future__ import annotations

import traceback

import orjson

from taskforge import spans
from taskforge.jobs import Status, backoff_delay
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.worker.registry import Fail, Handler, JobContext, Retry

NO_HANDLER = (
    "no handler registered for job type {type!r} on queue {queue!r}; "
    "register it with @registry.job in a module named by TASKFORGE_HANDLERS"
)


def dead(job: ClaimedJob, error: str) -> Outcome:
    """The attempt ends the job: no retry."""
    return Outcome(job.id, job.attempt, Status.DEAD, error=error)


def failed(
    job: ClaimedJob,
    error: str,
    backoff_base: float,
    backoff_max: float,
    delay: float | None = None,
) -> Outcome:
    """Retry after ``delay`` (default: the backoff for this attempt), or dead on the last one."""
    if job.attempt >= job.max_attempts:
        return dead(job, f"{error} (attempt {job.attempt} of {job.max_attempts})")
    if delay is None:
        delay = backoff_delay(job.attempt, backoff_base, backoff_max)
    return Outcome(job.id, job.attempt, Status.RETRYING, error=error, delay=delay)


async def call(
    handler: Handler, ctx: JobContext, job: ClaimedJob, backoff_base: float, backoff_max: float
) -> Outcome:
    """Run the handler and turn what it returned or raised into an outcome."""
    try:
        result = await handler(ctx, job.payload)
    except Retry as exc:
        return failed(job, f"Retry: {exc}", backoff_base, backoff_max, exc.delay)
    except Fail as exc:
        return dead(job, f"Fail: {exc}")
    except Exception as exc:
        spans.record_error(exc)
        frames = "".join(traceback.format_exception(exc, limit=-3))
        error = f"{type(exc).__name__}: {exc}\n{frames[-2000:]}"
        return failed(job, error, backoff_base, backoff_max)
    try:
        encoded = orjson.dumps(result).decode()
    except TypeError as exc:
        return dead(job, f"handler returned a result that is not JSON: {exc}")
    return Outcome(job.id, job.attempt, Status.COMPLETED, result_json=encoded)
