"""``/v1/schedules``: cron schedules that make a job per tick (the scheduler runs them).

``PUT /v1/schedules/{name}`` creates (201) or replaces (200) a schedule::

    {"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "catchup": "skip",
     "job": {"type": "report.daily", "payload": {...}, "queue": "reports"}}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskforge import lifecycle
from taskforge.api.errors import ApiError
from taskforge.api.params import name_from
from taskforge.api.responses import json_response
from taskforge.api.validation import parse_json, validate_job
from taskforge.resources import POOL, SETTINGS
from taskforge.scheduler import cron

routes = web.RouteTableDef()
FIELDS = {"cron", "timezone", "job", "catchup", "paused"}
TEMPLATE_FIELDS = ("type", "payload", "queue", "priority", "max_attempts", "timeout_seconds")


@routes.get("/v1/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    """Every schedule, by name."""
    async with request.app[POOL].acquire() as conn:
        found = await lifecycle.list_schedules(conn)
    return json_response({"schedules": [s.to_json() for s in found]})


@routes.get("/v1/schedules/{name}")
async def get_schedule(request: web.Request) -> web.Response:
    """One schedule with its next and last run."""
    name = name_from(request, "schedule")
    async with request.app[POOL].acquire() as conn:
        found = await lifecycle.get_schedule(conn, name)
    if found is None:
        raise ApiError(404, "schedule_not_found", f"no schedule named {name!r}")
    return json_response(found.to_json())


@routes.delete("/v1/schedules/{name}")
async def delete_schedule(request: web.Request) -> web.Response:
    """Remove a schedule; jobs it already made stay."""
    name = name_from(request, "schedule")
    async with request.app[POOL].acquire() as conn:
        deleted = await lifecycle.delete_schedule(conn, name)
    if not deleted:
        raise ApiError(404, "schedule_not_found", f"no schedule named {name!r}")
    return web.Response(status=204)


@routes.put("/v1/schedules/{name}")
async def put_schedule(request: web.Request) -> web.Response:
    """Create (201) or replace (200) a schedule."""
    name = name_from(request, "schedule", creating=True)
    body = parse_json(await request.read())
    values = _validate(body, request)
    next_run_at = cron.first_run(values["cron"], values["timezone"])
    async with request.app[POOL].acquire() as conn:
        stored, created = await lifecycle.put_schedule(
            conn, name, next_run_at=next_run_at, **values
        )
    return json_response(stored.to_json(), status=201 if created else 200)


def _validate(body: Any, request: web.Request) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "a schedule must be a JSON object")
    problems: list[dict[str, Any]] = []

    def bad(field: str, problem: str) -> None:
        problems.append({"field": field, "problem": problem})

    for unknown in sorted(set(body) - FIELDS):
        bad(unknown, f"unknown field; allowed: {', '.join(sorted(FIELDS))}")
    expr = body.get("cron")
    if not isinstance(expr, str):
        bad("cron", "required: a cron expression, e.g. '*/5 * * * *'")
    elif (why := cron.check_expression(expr)) is not None:
        bad("cron", why)
    timezone = body.get("timezone", "UTC")
    if not isinstance(timezone, str) or cron.check_timezone(timezone) is not None:
        bad("timezone", "must be an IANA time zone name, e.g. UTC or Europe/Berlin")
    catchup = body.get("catchup", "skip")
    if catchup not in cron.CATCHUP_POLICIES:
        bad("catchup", f"must be one of {', '.join(cron.CATCHUP_POLICIES)}")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        bad("paused", "must be true or false")
    template: dict[str, Any] = {}
    job = body.get("job")
    if not isinstance(job, dict):
        bad("job", 'required: a job template, e.g. {"type": "ping", "payload": {}}')
    elif set(job) - set(TEMPLATE_FIELDS):
        bad("job", f"a template takes only {', '.join(TEMPLATE_FIELDS)} (ticks set run_at)")
    else:
        try:
            resolved = validate_job(job, request.app[SETTINGS])
            template = {field: resolved[field] for field in TEMPLATE_FIELDS}
        except ApiError as exc:
            for problem in exc.details or []:
                bad(f"job.{problem['field']}", problem["problem"])
    if problems:
        raise ApiError(
            422,
            "validation_error",
            "the schedule is invalid: "
            + "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            problems,
        )
    return {
        "cron": " ".join(str(expr).split()),
        "timezone": timezone,
        "job": template,
        "catchup": catchup,
        "paused": paused,
    }
