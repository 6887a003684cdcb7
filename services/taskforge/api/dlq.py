"""The dead-letter queue: dead jobs listed, inspected and replayed (one, or by filter).

PostgreSQL is the DLQ of record (jobs in state ``dead``); it has no cap. A replay resets the
attempts and sends the job back to ``pending``; its history keeps every earlier attempt and
records the replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from taskforge import lifecycle
from taskforge.api.errors import ApiError
from taskforge.api.jobs import job_id_from
from taskforge.api.listing import job_page
from taskforge.api.notifier import NOTIFIER
from taskforge.api.params import job_filter
from taskforge.api.responses import json_response
from taskforge.api.validation import JOB_TYPE, parse_json
from taskforge.config import QUEUE_NAME
from taskforge.jobs import Status, has_nul
from taskforge.resources import POOL

routes = web.RouteTableDef()
ACTOR = "api"
FILTER_FIELDS = {"type", "queue", "error", "died_after", "died_before", "dry_run"}


@routes.get("/v1/dlq")
async def list_dead(request: web.Request) -> web.Response:
    """Dead jobs newest first; filters as ``GET /v1/jobs`` plus ``error`` (substring)."""
    return await job_page(request, job_filter(request, statuses=(Status.DEAD,)))


@routes.get("/v1/dlq/{id}")
async def get_dead(request: web.Request) -> web.Response:
    """One dead job (404 when the job is not dead)."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.get_job(conn, job_id)
    if job is None or job.status is not Status.DEAD:
        raise ApiError(
            404,
            "job_not_found",
            f"no dead job with id {job_id}"
            + (f" (it is {job.status.value})" if job is not None else ""),
        )
    return json_response(job.to_json())


@routes.post("/v1/dlq/{id}/replay")
async def replay_one(request: web.Request) -> web.Response:
    """Send a dead job back to pending with its attempts reset."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.replay(conn, job_id, ACTOR)
        current = await lifecycle.get_job(conn, job_id) if job is None else job
    if current is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    if job is None:
        raise ApiError(
            409,
            "job_not_dead",
            f"job {job_id} is {current.status.value}; only dead jobs can be replayed "
            "(use POST /v1/jobs/{id}/retry for completed or cancelled ones)",
            {"status": current.status.value},
        )
    request.app[NOTIFIER].poke()
    return json_response(job.to_json())


@routes.post("/v1/dlq/replay")
async def replay_matching(request: web.Request) -> web.Response:
    """Replay every dead job matching a filter; ``"dry_run": true`` only counts them."""
    raw = await request.read()
    body = parse_json(raw) if raw.strip() else {}
    match, dry_run = _replay_filter(body)
    async with request.app[POOL].acquire() as conn:
        count = await lifecycle.replay_matching(conn, match, ACTOR, dry_run=dry_run)
    if count and not dry_run:
        request.app[NOTIFIER].poke()
    return json_response(
        {"dry_run": dry_run, "matched": count, "replayed": 0 if dry_run else count}
    )


def _replay_filter(body: Any) -> tuple[lifecycle.ReplayFilter, bool]:
    problems: list[dict[str, str]] = []

    def bad(field: str, problem: str) -> None:
        problems.append({"field": field, "problem": problem})

    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "the filter must be a JSON object")
    for unknown in sorted(set(body) - FILTER_FIELDS):
        bad(unknown, f"unknown field; allowed: {', '.join(sorted(FILTER_FIELDS))}")
    job_type, queue, error = body.get("type"), body.get("queue"), body.get("error")
    if job_type is not None and (not isinstance(job_type, str) or not JOB_TYPE.fullmatch(job_type)):
        bad("type", "must be a job type")
    if queue is not None and (not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue)):
        bad("queue", "must be a queue name")
    if error is not None and (
        not isinstance(error, str) or not 0 < len(error) <= 200 or has_nul(error)
    ):
        bad("error", "must be a string of 1-200 characters (matched case-insensitively)")
    times: dict[str, datetime | None] = {}
    for field in ("died_after", "died_before"):
        value = body.get(field)
        times[field] = None
        if value is None:
            continue
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if not isinstance(value, str) or parsed is None or parsed.tzinfo is None:
            bad(field, "must be an RFC 3339 timestamp with a zone, e.g. 2026-01-02T03:04:05Z")
        else:
            times[field] = parsed
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        bad("dry_run", "must be true or false")
    if problems:
        raise ApiError(
            422,
            "validation_error",
            "the replay filter is invalid: "
            + "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            problems,
        )
    return (
        lifecycle.ReplayFilter(
            died_before=times["died_before"],
            type=job_type,
            queue=queue,
            error_contains=error,
            died_after=times["died_after"],
        ),
        bool(dry_run),
    )
