"""The OpenAPI 3.1 document of the REST API, served at ``GET /openapi.json``.

Written by hand next to the handlers (a test checks that every route is documented and
every documented operation is routed, and schemathesis checks the answers against it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskforge import __version__
from taskforge.api.openapi_schemas import NAME_PATTERN, SCHEMAS, STATES, Schema, ref
from taskforge.api.responses import json_response

routes = web.RouteTableDef()

_ERRORS = {
    400: "Malformed request: invalid JSON, header or query parameter",
    401: "Missing or unknown API token",
    404: "No such job, queue or schedule",
    409: "The job is not in a state this action starts from",
    413: "Request body over TASKFORGE_MAX_BODY_BYTES",
    422: "Validation failed; details list each field's problem",
    429: "Rate limit reached; retry after Retry-After seconds",
}


def _json(description: str, schema: Schema, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = {
            name: {"schema": {"type": "string"}, "description": text}
            for name, text in headers.items()
        }
    return out


def _op(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    params: tuple[str, ...] = (),
    body: str | None = None,
    body_required: bool = True,
    open_: bool = False,
    tag: str = "jobs",
) -> dict[str, Any]:
    codes = set(errors) | ({400, 413, 422} if body else set()) | (set() if open_ else {401, 429})
    responses = {str(code): response for code, response in ok.items()}
    for code in sorted(codes):
        responses[str(code)] = _json(_ERRORS[code], ref("Error"))
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if open_:
        op["security"] = []
    return op


_LIST = (
    "status",
    "queue",
    "type",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
    "error",
    "limit",
    "cursor",
)
_JOB = _json("The job", ref("Job"))
# With `Prefer: return=minimal` a submit answers the job's id alone.
_JOB_OR_ID = {"anyOf": [ref("Job"), ref("JobId")]}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/jobs": {
        "post": {
            **_op(
                "Submit a job",
                {
                    202: _json("Created", _JOB_OR_ID, Location="the job's URL"),
                    200: _json("Existing job (same Idempotency-Key and body)", _JOB_OR_ID),
                },
                body="JobInput",
            ),
            "parameters": [
                {"$ref": "#/components/parameters/idempotency_key"},
                {"$ref": "#/components/parameters/prefer"},
            ],
        },
        "get": _op(
            "List jobs, newest first", {200: _json("A page", ref("JobPage"))}, (400,), params=_LIST
        ),
    },
    "/v1/jobs/batch": {
        "post": _op(
            "Submit up to 1,000 jobs in one INSERT",
            {
                202: _json("At least one created", ref("BatchOutput")),
                200: _json("None created", ref("BatchOutput")),
            },
            body="BatchInput",
            params=("prefer",),
        )
    },
    "/v1/jobs/{id}": {"get": _op("Get a job", {200: _JOB}, (404,), params=("id",))},
    "/v1/jobs/{id}/events": {
        "get": _op(
            "A job's history", {200: _json("Transitions", ref("EventList"))}, (404,), params=("id",)
        )
    },
    "/v1/jobs/{id}/cancel": {
        "post": _op(
            "Cancel a job",
            {
                200: _json("Cancelled (it was waiting)", ref("Job")),
                202: _json("Running: its worker was told to stop it", ref("Job")),
            },
            (404, 409),
            params=("id",),
        )
    },
    "/v1/jobs/{id}/retry": {
        "post": _op("Run a finished job again", {200: _JOB}, (404, 409), params=("id",))
    },
    "/v1/jobs/{id}/dlq": {
        "post": _op(
            "Move a waiting job to the DLQ",
            {200: _JOB},
            (404, 409),
            params=("id",),
            body="DlqReason",
            body_required=False,
            tag="dlq",
        )
    },
    "/v1/dlq": {
        "get": _op(
            "List dead jobs",
            {200: _json("A page", ref("JobPage"))},
            (400,),
            params=tuple(p for p in _LIST if p != "status"),
            tag="dlq",
        )
    },
    "/v1/dlq/{id}": {"get": _op("Get a dead job", {200: _JOB}, (404,), params=("id",), tag="dlq")},
    "/v1/dlq/{id}/replay": {
        "post": _op("Replay a dead job", {200: _JOB}, (404, 409), params=("id",), tag="dlq")
    },
    "/v1/dlq/replay": {
        "post": _op(
            "Replay dead jobs by filter (or count them with dry_run)",
            {200: _json("Counts", ref("ReplayResult"))},
            body="ReplayFilter",
            body_required=False,
            tag="dlq",
        )
    },
    "/v1/queues": {
        "get": _op("List queues with stats", {200: _json("Queues", ref("QueueList"))}, tag="queues")
    },
    "/v1/queues/{name}": {
        "get": _op(
            "A queue's stats",
            {200: _json("The queue", ref("Queue"))},
            (404,),
            params=("name",),
            tag="queues",
        ),
        "patch": _op(
            "Change a queue's settings",
            {200: _json("The queue", ref("Queue"))},
            params=("name",),
            body="QueueUpdate",
            tag="queues",
        ),
    },
    "/v1/queues/{name}/pause": {
        "post": _op(
            "Pause dispatching a queue",
            {200: _json("The queue", ref("Queue"))},
            (422,),
            params=("name",),
            tag="queues",
        )
    },
    "/v1/queues/{name}/resume": {
        "post": _op(
            "Resume dispatching a queue",
            {200: _json("The queue", ref("Queue"))},
            (422,),
            params=("name",),
            tag="queues",
        )
    },
    "/v1/schedules": {
        "get": _op(
            "List schedules", {200: _json("Schedules", ref("ScheduleList"))}, tag="schedules"
        )
    },
    "/v1/schedules/{name}": {
        "get": _op(
            "Get a schedule",
            {200: _json("The schedule", ref("Schedule"))},
            (404,),
            params=("name",),
            tag="schedules",
        ),
        "put": _op(
            "Create or replace a schedule",
            {201: _json("Created", ref("Schedule")), 200: _json("Replaced", ref("Schedule"))},
            params=("name",),
            body="ScheduleInput",
            tag="schedules",
        ),
        "delete": _op(
            "Delete a schedule",
            {204: {"description": "Deleted"}},
            (404,),
            params=("name",),
            tag="schedules",
        ),
    },
    "/healthz": {
        "get": _op("Liveness", {200: _json("Alive", ref("Health"))}, open_=True, tag="ops")
    },
    "/readyz": {
        "get": _op(
            "Readiness",
            {
                200: _json("Ready", ref("Health")),
                503: _json("A store is unreachable", ref("Health")),
            },
            open_=True,
            tag="ops",
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {
                200: {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            open_=True,
            tag="ops",
        )
    },
    "/openapi.json": {
        "get": _op(
            "This document", {200: _json("OpenAPI 3.1", {"type": "object"})}, open_=True, tag="ops"
        )
    },
}


def _query(name: str, description: str, schema: Schema) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TIME = {"type": "string", "format": "date-time"}
PARAMETERS: dict[str, Any] = {
    "id": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    },
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": NAME_PATTERN},
    },
    "idempotency_key": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "repeat a submit safely: same key and body, same job",
    },
    "prefer": {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "examples": ["return=minimal"]},
        "description": "`return=minimal` (RFC 7240): answer the new jobs' ids, not their "
        "documents (answered with `Preference-Applied: return=minimal`)",
    },
    "status": _query(
        "status", f"one or more of {', '.join(STATES)}, comma-separated", {"type": "string"}
    ),
    "queue": _query("queue", "queue name", {"type": "string", "pattern": NAME_PATTERN}),
    "type": _query("type", "job type", {"type": "string"}),
    "created_after": _query("created_after", "created at or after", _TIME),
    "created_before": _query("created_before", "created before", _TIME),
    "finished_after": _query("finished_after", "finished at or after", _TIME),
    "finished_before": _query("finished_before", "finished before", _TIME),
    "error": _query(
        "error",
        "substring of the last error (case-insensitive)",
        {"type": "string", "minLength": 1, "maxLength": 200},
    ),
    "limit": _query(
        "limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    ),
    "cursor": _query("cursor", "next_cursor of the previous page", {"type": "string"}),
}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskforge",
            "version": __version__,
            "description": "Jobs over REST, kept in PostgreSQL, delivered by Redis Streams. "
            'Errors are always {"error": {"code", "message", "details"}}; every '
            "response carries X-Request-ID.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return json_response(document())
