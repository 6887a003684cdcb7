"""How an attempt ended, as the :class:`~taskforge.lifecycle.Outcome` the finisher records.

The rules: ``Retry`` retries after its own delay, ``Fail`` is dead at once, any other error
retries with exponential backoff, and every failure of the last attempt is dead; a result must
be JSON. A timeout is a failure like any other (the worker's sweep stops the handler).

Whatever an outcome carries must be storable: PostgreSQL's text and jsonb refuse U+0000,
asyncpg cannot encode a lone surrogate (an undecodable file name leaves one in an OSError's
text), and a retry's delay must be a time PostgreSQL can add. One outcome it refused would
fail the finish of its whole batch on every try, and no outcome after it would be recorded.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable

import orjson

from taskforge import spans
from taskforge.jobs import Status, backoff_delay, has_nul
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.worker.registry import Fail, Handler, JobContext, Retry
from taskforge.worker.threads import HandlerThreads

NO_HANDLER = (
    "no handler registered for job type {type!r} on queue {queue!r}; "
    "register it with @registry.job in a module named by TASKFORGE_HANDLERS"
)


# The longest a Retry may wait: as far ahead as a job may be submitted to run (a year).
MAX_RETRY_DELAY = 366 * 86400.0


def storable(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates written as escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


def dead(job: ClaimedJob, error: str) -> Outcome:
    """The attempt ends the job: no retry."""
    return Outcome(job.id, job.attempt, Status.DEAD, error=storable(error))


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
    if delay is None or math.isnan(delay):
        delay = backoff_delay(job.attempt, backoff_base, backoff_max)
    delay = min(max(delay, 0.0), MAX_RETRY_DELAY)
    return Outcome(job.id, job.attempt, Status.RETRYING, error=storable(error), delay=delay)


async def call(
    handler: Handler,
    ctx: JobContext,
    job: ClaimedJob,
    backoff_base: float,
    backoff_max: float,
    threads: HandlerThreads | None = None,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """Run the handler and turn what it returned or raised into an outcome (``threads`` and
    ``on_start`` as :meth:`Handler.__call__` takes them)."""
    try:
        result = await handler(ctx, job.payload, threads, on_start)
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
    # orjson writes U+0000 as the escape \u0000; only then is the result searched for one
    # (the escape may also be a string's own backslash followed by "u0000").
    if "\\u0000" in encoded and has_nul(result):
        return dead(
            job,
            "handler returned a result holding U+0000 (NUL), which PostgreSQL cannot store; "
            "leave it out or encode it (base64, or an escape of your own)",
        )
    return Outcome(job.id, job.attempt, Status.COMPLETED, result_json=encoded)
