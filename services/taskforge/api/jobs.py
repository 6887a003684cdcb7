"""``/v1/jobs``: submit and inspect jobs. The api only INSERTs; the dispatcher sends."""

from __future__ import annotations

import uuid

from aiohttp import web

from taskforge import lifecycle, metrics, spans
from taskforge.api.errors import ApiError
from taskforge.api.keys import TRACEPARENT, TRACESTATE
from taskforge.api.responses import MINIMAL_APPLIED, json_response, prefers_minimal
from taskforge.api.submitter import SUBMITTER
from taskforge.api.validation import (
    nul_free,
    parse_json,
    request_hash,
    validate_idempotency_key,
    validate_job,
)
from taskforge.resources import POOL, SETTINGS

routes = web.RouteTableDef()


def job_id_from(request: web.Request) -> uuid.UUID:
    """The ``{id}`` path segment as a UUID, or a 404 (an invalid id names no job)."""
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "job_not_found", f"no job with id {raw!r} (ids are UUIDs)") from None


@routes.post("/v1/jobs")
async def submit_job(request: web.Request) -> web.Response:
    """Store a pending job: 202 when created, 200 for a repeated Idempotency-Key with the same
    body, 422 for a repeated key with a different body. The job as a document, or only
    ``{"id": …}`` with ``Prefer: return=minimal``."""
    key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    raw = await request.read()
    body = parse_json(raw)
    values = validate_job(body, request.app[SETTINGS], known_nul_free=nul_free(raw))
    values["idempotency_key"] = key
    fingerprint = request_hash(body) if key else None
    traceparent, tracestate = request.get(TRACEPARENT), request.get(TRACESTATE)
    with spans.create(values["queue"], values["type"], traceparent, tracestate) as created:
        values["traceparent"] = created.traceparent
        values["tracestate"] = created.tracestate
        outcome = await request.app[SUBMITTER].submit(values, fingerprint)
        created.stored(outcome.job.id, outcome.created)
    job = outcome.job
    if outcome.created:
        metrics.submitted(job.queue).inc()
    elif outcome.request_hash != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a different job",
            {"job_id": str(job.id)},
        )
    status = 202 if outcome.created else 200
    location = {"Location": f"/v1/jobs/{job.id}"}
    if prefers_minimal(request):
        return json_response({"id": str(job.id)}, status=status, headers=location | MINIMAL_APPLIED)
    return json_response(job.to_json(), status=status, headers=location)


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    """The job: status, attempts, timestamps, last error, result."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.get_job(conn, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return json_response(job.to_json())
