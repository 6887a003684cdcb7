"""``GET /v1/jobs`` (filtered, cursor-paginated) and ``GET /v1/jobs/{id}/events`` (history)."""

from __future__ import annotations

from aiohttp import web

from taskforge import lifecycle
from taskforge.api.errors import ApiError
from taskforge.api.jobs import job_id_from
from taskforge.api.params import cursor_param, encode_cursor, job_filter, limit_param
from taskforge.api.responses import json_response
from taskforge.resources import POOL

routes = web.RouteTableDef()


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs newest first, filtered by status, queue, type, creation time and error text.

    Pass ``next_cursor`` back as ``cursor`` for the next page; it is null on the last one.
    """
    return await job_page(request, job_filter(request))


async def job_page(request: web.Request, match: lifecycle.JobFilter) -> web.Response:
    """One page of jobs matching ``match``, with ``limit`` and ``cursor`` from the query."""
    limit = limit_param(request)
    after = cursor_param(request)
    async with request.app[POOL].acquire() as conn:
        page = await lifecycle.list_jobs(conn, match, limit, after)
    return json_response(
        {
            "jobs": [job.to_json() for job in page.jobs],
            "next_cursor": encode_cursor(page.next_after),
        }
    )


@routes.get("/v1/jobs/{id}/events")
async def job_events(request: web.Request) -> web.Response:
    """Every transition of the job, oldest first: who, when, from, to, attempt, error."""
    job_id = job_id_from(request)
    async with request.app[POOL].acquire() as conn:
        job = await lifecycle.get_job(conn, job_id)
        events = await lifecycle.job_events(conn, job_id) if job is not None else []
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return json_response({"job_id": str(job_id), "events": [e.to_json() for e in events]})
