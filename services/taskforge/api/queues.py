"""Queues: stats (jobs per state, backlog, oldest wait, throughput), pause/resume, caps.

Pausing stops the dispatcher sending the queue's jobs (running ones finish); its jobs wait
as they are and go out on resume. A concurrency cap limits queued + running jobs of the
queue across all workers.
"""

from __future__ import annotations

from aiohttp import web

from taskforge import lifecycle
from taskforge.api.errors import ApiError
from taskforge.api.notifier import NOTIFIER
from taskforge.api.params import name_from
from taskforge.api.responses import json_response
from taskforge.api.validation import parse_json
from taskforge.resources import POOL

routes = web.RouteTableDef()
MAX_CONCURRENCY = 100_000


async def _stats_response(request: web.Request, name: str) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        found = await lifecycle.queue_stats(conn, name)
    if not found:
        raise ApiError(
            404, "queue_not_found", f"no queue named {name!r}: it has no jobs or settings"
        )
    return json_response(found[0].to_json())


@routes.get("/v1/queues")
async def list_queues(request: web.Request) -> web.Response:
    """Every queue that has jobs or settings, by name."""
    async with request.app[POOL].acquire() as conn:
        found = await lifecycle.queue_stats(conn)
    return json_response({"queues": [q.to_json() for q in found]})


@routes.get("/v1/queues/{name}")
async def get_queue(request: web.Request) -> web.Response:
    """One queue's settings and stats."""
    return await _stats_response(request, name_from(request, "queue"))


@routes.post("/v1/queues/{name}/pause")
async def pause_queue(request: web.Request) -> web.Response:
    """Stop dispatching the queue's jobs (a queue may be paused before it has any)."""
    name = name_from(request, "queue", creating=True)
    async with request.app[POOL].acquire() as conn:
        await lifecycle.set_paused(conn, name, True)
    return await _stats_response(request, name)


@routes.post("/v1/queues/{name}/resume")
async def resume_queue(request: web.Request) -> web.Response:
    """Dispatch the queue's jobs again."""
    name = name_from(request, "queue", creating=True)
    async with request.app[POOL].acquire() as conn:
        await lifecycle.set_paused(conn, name, False)
    request.app[NOTIFIER].poke()
    return await _stats_response(request, name)


@routes.patch("/v1/queues/{name}")
async def update_queue(request: web.Request) -> web.Response:
    """Change settings: ``{"concurrency": n | null, "paused": bool}`` (both optional)."""
    name = name_from(request, "queue", creating=True)
    body = parse_json(await request.read())
    problems = []
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "queue settings must be a JSON object")
    if not body:
        problems.append({"field": "", "problem": "give concurrency, paused or both"})
    for unknown in sorted(set(body) - {"concurrency", "paused"}):
        problems.append(
            {"field": unknown, "problem": "unknown field; allowed: concurrency, paused"}
        )
    limit = body.get("concurrency")
    if (
        "concurrency" in body
        and limit is not None
        and (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= MAX_CONCURRENCY
        )
    ):
        problems.append(
            {"field": "concurrency", "problem": f"must be 1-{MAX_CONCURRENCY}, or null for no cap"}
        )
    if "paused" in body and not isinstance(body["paused"], bool):
        problems.append({"field": "paused", "problem": "must be true or false"})
    if problems:
        raise ApiError(
            422,
            "validation_error",
            "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            problems,
        )
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if "concurrency" in body:
            await lifecycle.set_concurrency(conn, name, limit)
        if "paused" in body:
            await lifecycle.set_paused(conn, name, body["paused"])
    request.app[NOTIFIER].poke()  # resumed, or room under a raised cap
    return await _stats_response(request, name)
