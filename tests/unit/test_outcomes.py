"""The rules that turn a handler's return or exception into the outcome recorded."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest

from taskforge.jobs import Status
from taskforge.lifecycle import ClaimedJob
from taskforge.worker import outcomes
from taskforge.worker.registry import Fail, Handler, JobContext, Retry


def _job(attempt: int = 1, max_attempts: int = 3) -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(
        uuid.uuid4(), "default", "t", {"n": 1}, attempt, max_attempts, 30.0, None, None, "1-0", now
    )


def _ctx(job: ClaimedJob) -> JobContext:
    logger = logging.LoggerAdapter(logging.getLogger("test"), {})
    return JobContext(job.id, job.type, job.queue, job.attempt, job.max_attempts, "1-0", logger)


async def _run(func, job: ClaimedJob):
    return await outcomes.call(Handler("t", func, True), _ctx(job), job, 1.0, 60.0)


async def test_a_result_completes_with_its_json():
    async def ok(ctx, payload):
        return {"got": payload["n"]}

    outcome = await _run(ok, _job())
    assert outcome.status is Status.COMPLETED and outcome.result_json == '{"got":1}'


@pytest.mark.parametrize(
    ("raised", "status", "error_start", "delays"),
    [
        (Retry("later", delay=7.5), Status.RETRYING, "Retry: later", (7.5, 7.5)),
        (Fail("never"), Status.DEAD, "Fail: never", (0.0, 0.0)),
        # Any other error: the backoff of attempt 1 (full jitter below base = 1 s).
        (ValueError("boom"), Status.RETRYING, "ValueError: boom", (0.0, 1.0)),
    ],
)
async def test_exceptions_map_to_their_outcomes(raised, status, error_start, delays):
    async def boom(ctx, payload):
        raise raised

    outcome = await _run(boom, _job())
    assert outcome.status is status
    assert (outcome.error or "").startswith(error_start)
    assert delays[0] <= outcome.delay <= delays[1]


async def test_the_last_attempt_is_dead_whatever_the_failure():
    async def boom(ctx, payload):
        raise Retry("again", delay=1)

    outcome = await _run(boom, _job(attempt=3, max_attempts=3))
    assert outcome.status is Status.DEAD
    assert outcome.error == "Retry: again (attempt 3 of 3)"


async def test_a_result_that_is_not_json_is_dead():
    async def odd(ctx, payload):
        return object()

    outcome = await _run(odd, _job())
    assert outcome.status is Status.DEAD
    assert (outcome.error or "").startswith("handler returned a result that is not JSON")


def test_failed_uses_the_backoff_unless_given_a_delay():
    job = _job(attempt=2)
    assert outcomes.failed(job, "x", 1.0, 60.0, delay=3.0).delay == 3.0
    backoff = outcomes.failed(job, "x", 1.0, 60.0).delay
    assert 0 < backoff <= 60.0


async def test_an_error_is_stored_whatever_its_text_holds():
    # An undecodable file name leaves a lone surrogate in the error's text; a NUL can come
    # from anywhere. PostgreSQL (or asyncpg's encoder) refuses both, and one refused outcome
    # would fail its whole batch's finish on every try.
    async def oserror(ctx, payload):
        raise FileNotFoundError(2, "No such file", "caf\udce9\x00.txt")

    outcome = await _run(oserror, _job())
    assert outcome.status is Status.RETRYING
    error = outcome.error or ""
    error.encode()  # no lone surrogate left
    assert "\x00" not in error
    assert "caf\\udce9\\x00.txt" in error

    async def last(ctx, payload):
        raise Fail("bad \x00 byte")

    assert (await _run(last, _job())).error == "Fail: bad \\x00 byte"


async def test_a_result_holding_nul_is_dead_and_a_backslash_text_is_not():
    async def nul(ctx, payload):
        return {"text": "a\x00b"}

    outcome = await _run(nul, _job())
    assert outcome.status is Status.DEAD
    assert "U+0000" in (outcome.error or "") and outcome.result_json is None

    async def backslash(ctx, payload):
        return {"text": "\\u0000 is how JSON writes it"}

    outcome = await _run(backslash, _job())
    assert outcome.status is Status.COMPLETED
    assert outcome.result_json == '{"text":"\\\\u0000 is how JSON writes it"}'


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (float("nan"), (0.0, 1.0)),  # no delay at all: the backoff of attempt 1
        (float("inf"), (outcomes.MAX_RETRY_DELAY, outcomes.MAX_RETRY_DELAY)),
        (1e300, (outcomes.MAX_RETRY_DELAY, outcomes.MAX_RETRY_DELAY)),
        (-5.0, (0.0, 0.0)),
    ],
)
async def test_a_retry_delay_is_a_time_postgresql_can_add(delay, expected):
    async def retry(ctx, payload):
        raise Retry("later", delay=delay)

    outcome = await _run(retry, _job())
    assert outcome.status is Status.RETRYING
    assert expected[0] <= outcome.delay <= expected[1]
