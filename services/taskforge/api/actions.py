"""Operator actions on jobs: batch submit, cancel, retry, and move to the DLQ.

Like submit, these only change rows; the dispatcher (re)delivers. The one push is cancel of
a running job: the api flags the row, then names the job on the Redis cancel channel so its
worker stops the handler within moments (the worker's heartbeat catches a lost message).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from taskforge import lifecycle, metrics, spans, streams
from taskforge.api.errors import ApiError
from taskforge.api.jobs import job_id_from
from taskforge.api.keys import TRACEPARENT, TRACESTATE
from taskforge.api.notifier import NOTIFIER
from taskforge.api.responses import MINIMAL_APPLIED, json_response, prefers_minimal
from taskforge.api.validation import (
    nul_free,
    parse_json,
    request_hash,
    validate_idempotency_key,
    validate_job,
)
from taskforge.jobs import Job, Status, has_nul
from taskforge.resources import POOL, REDIS, SETTINGS

log = logging.getLogger("taskforge.api")
routes = web.RouteTableDef()

MAX_BATCH = 1000
ACTOR = "api"


async def _job_or_404(request: web.Request, job_id: Any) -> Job:
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.get_job(conn, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return job


@routes.post("/v1/jobs/batch")
async def submit_batch(request: web.Request) -> web.Response:
    """Store up to 1,000 jobs in one INSERT; per job: created, existing (same key and body)
    or conflict (same key, different body). 202 when any was created, else 200. With
    ``Prefer: return=minimal`` each result names its job's id but carries no document."""
    raw = await request.read()
    body = parse_json(raw)
    clean = nul_free(raw)
    specs_in = body.get("jobs") if isinstance(body, dict) else None
    if (
        not isinstance(specs_in, list)
        or not 1 <= len(specs_in) <= MAX_BATCH
        or set(body) != {"jobs"}
    ):
        raise ApiError(
            422,
            "validation_error",
            f'send {{"jobs": [...]}} with 1 to {MAX_BATCH} job objects',
            [{"field": "jobs", "problem": f"must be an array of 1-{MAX_BATCH} jobs"}],
        )
    settings = request.app[SETTINGS]
    specs: list[dict[str, Any]] = []
    hashes: list[str | None] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(specs_in):
        try:
            fields = dict(item) if isinstance(item, dict) else item
            key = fields.pop("idempotency_key", None) if isinstance(fields, dict) else None
            if key is not None and not isinstance(key, str):
                raise ApiError(422, "validation_error", "idempotency_key must be a string")
            key = validate_idempotency_key(key)
            values = validate_job(fields, settings, known_nul_free=clean)
        except ApiError as exc:
            problems.append({"index": index, "problem": exc.message})
            continue
        values["idempotency_key"] = key
        specs.append(values)
        hashes.append(request_hash(fields) if key else None)
    if problems:
        raise ApiError(
            422,
            "validation_error",
            f"{len(problems)} of {len(specs_in)} jobs are invalid; nothing was stored "
            f"(first: job {problems[0]['index']}: {problems[0]['problem']})",
            problems,
        )
    traceparent, tracestate = request.get(TRACEPARENT), request.get(TRACESTATE)
    queues = [spec["queue"] for spec in specs]
    with spans.create_batch(queues, traceparent, tracestate) as created:
        async with request.app[POOL].acquire() as conn:
            outcomes = await lifecycle.submit_batch(
                conn, specs, hashes, created.traceparent, created.tracestate
            )
    minimal = prefers_minimal(request)
    results: list[dict[str, Any]] = []
    tally = {"created": 0, "existing": 0, "conflict": 0}
    created_per_queue: dict[str, int] = {}
    for index, (outcome, fingerprint) in enumerate(zip(outcomes, hashes, strict=True)):
        if outcome.created:
            state = "created"
            queue = outcome.job.queue
            created_per_queue[queue] = created_per_queue.get(queue, 0) + 1
        elif outcome.request_hash == fingerprint:
            state = "existing"
        else:
            state = "conflict"
        tally[state] += 1
        result: dict[str, Any] = {"index": index, "result": state, "job_id": str(outcome.job.id)}
        if state == "conflict":
            result["error"] = {
                "code": "idempotency_key_reused",
                "message": "this idempotency_key was already used with a different job body",
                "details": None,
            }
        elif not minimal:
            result["job"] = outcome.job.to_json()
        results.append(result)
    for queue, count in created_per_queue.items():
        metrics.submitted(queue).inc(count)
    return json_response(
        {"results": results, **tally},
        status=202 if tally["created"] else 200,
        headers=MINIMAL_APPLIED if minimal else None,
    )


@routes.post("/v1/jobs/{id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """200: a waiting job is cancelled. 202: a running job's worker was told to stop it."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.cancel(conn, job_id, ACTOR)
    if job is None:
        current = await _job_or_404(request, job_id)
        raise ApiError(
            409,
            "job_not_cancellable",
            f"job {job_id} is {current.status.value}; only waiting or running jobs can be "
            "cancelled",
            {"status": current.status.value},
        )
    if job.status is Status.RUNNING:
        try:
            await request.app[REDIS].publish(streams.cancel_channel(), str(job.id))
        except (RedisError, OSError) as exc:
            # The row says cancel_requested; the worker's next heartbeat acts on it.
            log.warning(
                "cancel signal not published; the heartbeat will deliver it",
                extra={"action": "cancel.publish_error", "job_id": str(job.id), "error": repr(exc)},
            )
        return json_response(job.to_json(), status=202)
    return json_response(job.to_json())


@routes.post("/v1/jobs/{id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    """Run a finished (completed, cancelled or dead) job again, attempts reset."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.retry(conn, job_id, ACTOR)
    if job is None:
        current = await _job_or_404(request, job_id)
        raise ApiError(
            409,
            "job_not_retryable",
            f"job {job_id} is {current.status.value}; only completed, cancelled or dead jobs "
            "can be retried",
            {"status": current.status.value},
        )
    request.app[NOTIFIER].poke()
    return json_response(job.to_json())


@routes.post("/v1/jobs/{id}/dlq")
async def move_to_dlq(request: web.Request) -> web.Response:
    """Make a waiting job dead with a reason (``{"reason": "..."}``, optional)."""
    job_id = job_id_from(request)
    raw = await request.read()
    reason = "moved to the DLQ by an operator"
    if raw.strip():
        body = parse_json(raw)
        given = body.get("reason") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or set(body) - {"reason"}
            or not (given is None or (isinstance(given, str) and 0 < len(given) <= 2000))
            or has_nul(given)
        ):
            raise ApiError(
                422,
                "validation_error",
                'send {"reason": "..."} (1-2000 characters) or no body',
                [{"field": "reason", "problem": "must be a string of 1-2000 characters"}],
            )
        reason = given or reason
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.move_to_dlq(conn, job_id, ACTOR, reason)
    if job is None:
        current = await _job_or_404(request, job_id)
        raise ApiError(
            409,
            "job_not_movable",
            f"job {job_id} is {current.status.value}; only waiting jobs (pending, retrying, "
            "queued) can be moved to the DLQ; cancel a running one first",
            {"status": current.status.value},
        )
    try:
        notice = {"job_id": job.id, "type": job.type, "queue": job.queue}
        await streams.publish_dead(
            request.app[REDIS], [{**notice, "attempts": job.attempts, "error": reason}]
        )
    except (RedisError, OSError):
        pass  # the notice is a courtesy for ops consumers; PostgreSQL holds the dead job
    return json_response(job.to_json())
