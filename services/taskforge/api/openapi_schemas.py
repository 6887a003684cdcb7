"""JSON Schemas (OpenAPI 3.1 components) of the REST API's bodies.

Bounds mirror :mod:`taskforge.api.validation` so a client validating against the document
is told no less than the server would tell it.
"""

from __future__ import annotations

from typing import Any

from taskforge.api import validation
from taskforge.jobs import Status

Schema = dict[str, Any]

STATES = [s.value for s in Status]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TYPE_PATTERN = validation.JOB_TYPE.pattern


def ref(name: str) -> Schema:
    """A ``$ref`` to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (OpenAPI 3.1 / JSON Schema style)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: list[str], closed: bool = True, /, **properties: Schema) -> Schema:
    """An object schema; ``closed`` forbids unknown properties."""
    schema: Schema = {"type": "object", "properties": properties, "required": required}
    if closed:
        schema["additionalProperties"] = False
    return schema


TIME: Schema = {"type": "string", "format": "date-time"}
UUID: Schema = {"type": "string", "format": "uuid"}
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}

JOB_FIELDS: dict[str, Schema] = {
    "type": {"type": "string", "pattern": TYPE_PATTERN, "description": "handler name"},
    "payload": {"type": "object", "description": "handler input (default {})"},
    "queue": {"type": "string", "pattern": NAME_PATTERN, "default": "default"},
    "priority": {
        "type": "integer",
        "minimum": -validation.MAX_PRIORITY,
        "maximum": validation.MAX_PRIORITY,
        "default": 0,
        "description": "higher runs first",
    },
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": validation.MAX_ATTEMPTS},
    "timeout_seconds": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": validation.MAX_TIMEOUT,
    },
    "run_at": {**TIME, "description": "when to run (at most a year ahead)"},
    "delay_seconds": {"type": "number", "minimum": 0, "maximum": validation.MAX_DELAY},
}

JOB_INPUT: Schema = {
    **obj(["type"], **JOB_FIELDS),
    "not": {"required": ["run_at", "delay_seconds"]},
    "description": "give run_at or delay_seconds, not both",
}

BATCH_ITEM: Schema = {
    **obj(
        ["type"],
        **JOB_FIELDS,
        idempotency_key={"type": "string", "minLength": 1, "maxLength": validation.MAX_KEY_LENGTH},
    ),
    "not": {"required": ["run_at", "delay_seconds"]},
}

JOB: Schema = obj(
    [
        "id",
        "queue",
        "type",
        "payload",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "run_at",
        "timeout_seconds",
        "created_at",
        "updated_at",
        "cancel_requested",
    ],
    False,
    id=UUID,
    queue=STR,
    type=STR,
    payload={"type": "object"},
    status={"type": "string", "enum": STATES},
    priority=INT,
    attempts=INT,
    max_attempts=INT,
    run_at=TIME,
    timeout_seconds={"type": "number"},
    idempotency_key=nullable(STR),
    last_error=nullable(STR),
    result={"description": "the handler's return value (completed jobs)"},
    cancel_requested=BOOL,
    worker=nullable(STR),
    created_at=TIME,
    updated_at=TIME,
    started_at=nullable(TIME),
    finished_at=nullable(TIME),
    traceparent=nullable(STR),
)

ERROR: Schema = obj(
    ["error"],
    error=obj(
        ["code", "message", "details"],
        code={"type": "string", "description": "stable, machine-readable"},
        message={"type": "string", "description": "what happened and what to do"},
        details={"description": "field problems, the current status, ... (or null)"},
    ),
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "JobInput": JOB_INPUT,
    "Job": JOB,
    "JobPage": obj(
        ["jobs", "next_cursor"],
        jobs={"type": "array", "items": ref("Job")},
        next_cursor=nullable(STR),
    ),
    "Event": obj(
        ["id", "at", "from_status", "to_status", "attempt", "actor", "error"],
        id=INT,
        at=TIME,
        from_status=nullable(STR),
        to_status=STR,
        attempt=INT,
        actor=STR,
        error=nullable(STR),
    ),
    "EventList": obj(
        ["job_id", "events"], job_id=UUID, events={"type": "array", "items": ref("Event")}
    ),
    "BatchInput": obj(
        ["jobs"], jobs={"type": "array", "minItems": 1, "maxItems": 1000, "items": BATCH_ITEM}
    ),
    "JobId": obj(["id"], id=UUID),
    "BatchResult": obj(
        ["index", "result", "job_id"],
        index=INT,
        result={"type": "string", "enum": ["created", "existing", "conflict"]},
        job_id=UUID,
        job={**ref("Job"), "description": "absent with `Prefer: return=minimal`"},
        error={"type": "object"},
    ),
    "BatchOutput": obj(
        ["results", "created", "existing", "conflict"],
        results={"type": "array", "items": ref("BatchResult")},
        created=INT,
        existing=INT,
        conflict=INT,
    ),
    "DlqReason": obj([], reason={"type": "string", "minLength": 1, "maxLength": 2000}),
    "ReplayFilter": obj(
        [],
        type={"type": "string", "pattern": TYPE_PATTERN},
        queue={"type": "string", "pattern": NAME_PATTERN},
        error={"type": "string", "minLength": 1, "maxLength": 200},
        died_after=TIME,
        died_before=TIME,
        dry_run=BOOL,
    ),
    "ReplayResult": obj(
        ["dry_run", "matched", "replayed"], dry_run=BOOL, matched=INT, replayed=INT
    ),
    "Queue": obj(
        [
            "name",
            "paused",
            "concurrency",
            "counts",
            "backlog",
            "oldest_age_seconds",
            "throughput_per_minute",
        ],
        name=STR,
        paused=BOOL,
        concurrency=nullable(INT),
        counts={
            "type": "object",
            "additionalProperties": INT,
            "properties": {state: INT for state in STATES},
            "required": STATES,
        },
        backlog=INT,
        oldest_age_seconds={"type": "number"},
        throughput_per_minute=INT,
    ),
    "QueueList": obj(["queues"], queues={"type": "array", "items": ref("Queue")}),
    "QueueUpdate": {
        **obj(
            [],
            concurrency=nullable({"type": "integer", "minimum": 1, "maximum": 100_000}),
            paused=BOOL,
        ),
        "minProperties": 1,
    },
    "ScheduleInput": obj(
        ["cron", "job"],
        cron={"type": "string", "description": "5 fields, or 6 with seconds first"},
        timezone={"type": "string", "default": "UTC", "description": "IANA time zone"},
        job={
            **obj(
                ["type"],
                **{
                    k: JOB_FIELDS[k]
                    for k in (
                        "type",
                        "payload",
                        "queue",
                        "priority",
                        "max_attempts",
                        "timeout_seconds",
                    )
                },
            ),
        },
        catchup={"type": "string", "enum": ["skip", "latest", "all"], "default": "skip"},
        paused=BOOL,
    ),
    "Schedule": obj(
        [
            "name",
            "cron",
            "timezone",
            "job",
            "catchup",
            "paused",
            "next_run_at",
            "last_run_at",
            "last_job_id",
            "created_at",
            "updated_at",
        ],
        name=STR,
        cron=STR,
        timezone=STR,
        job={"type": "object"},
        catchup={"type": "string", "enum": ["skip", "latest", "all"]},
        paused=BOOL,
        next_run_at=TIME,
        last_run_at=nullable(TIME),
        last_job_id=nullable(UUID),
        created_at=TIME,
        updated_at=TIME,
    ),
    "ScheduleList": obj(["schedules"], schedules={"type": "array", "items": ref("Schedule")}),
    "Health": obj(["status"], False, status=STR, checks={"type": "object"}),
}
