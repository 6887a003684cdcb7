"""Query and path parameters of the operator endpoints: parsed, checked, or a 400 naming them.

Also the listing cursor: an opaque base64url token holding the last row's
``id``, so clients page by passing ``next_cursor`` back as ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from taskforge.api.errors import ApiError
from taskforge.api.validation import JOB_TYPE
from taskforge.config import QUEUE_NAME
from taskforge.jobs import Status
from taskforge.lifecycle import JobFilter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_TEXT = 200


def bad_parameter(name: str, problem: str) -> ApiError:
    """A 400 naming the parameter and what would be accepted."""
    return ApiError(
        400,
        "invalid_parameter",
        f"query parameter {name!r} {problem}",
        [{"field": name, "problem": problem}],
    )


def limit_param(request: web.Request) -> int:
    """``limit``: 1 to 500, default 50."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def time_param(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 timestamp with a time zone, or None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise bad_parameter(
            name, "must be an RFC 3339 timestamp with a zone, e.g. 2026-01-02T03:04:05Z"
        )
    return value


def text_param(request: web.Request, name: str) -> str | None:
    """A free-text parameter of at most 200 printable characters, or None."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not 0 < len(raw) <= MAX_TEXT or not raw.isprintable():
        raise bad_parameter(name, f"must be 1-{MAX_TEXT} printable characters")
    return raw


def queue_param(request: web.Request) -> str | None:
    """``queue``: a queue name, or None."""
    raw = request.query.get("queue")
    if raw is not None and not QUEUE_NAME.fullmatch(raw):
        raise bad_parameter("queue", "must be 1-64 letters, digits, '_', '.', '-'")
    return raw


def type_param(request: web.Request) -> str | None:
    """``type``: a job type, or None."""
    raw = request.query.get("type")
    if raw is not None and not JOB_TYPE.fullmatch(raw):
        raise bad_parameter("type", "must be 1-200 letters, digits, '_', '.', ':', '-'")
    return raw


def status_param(request: web.Request) -> tuple[Status, ...]:
    """``status``: one state or several separated by commas."""
    raw = request.query.get("status")
    if raw is None:
        return ()
    try:
        return tuple(Status(part.strip()) for part in raw.split(","))
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise bad_parameter(
            "status", f"must be one or more of {allowed}, comma-separated"
        ) from None


def cursor_param(request: web.Request) -> uuid.UUID | None:
    """``cursor``: a ``next_cursor`` from an earlier page, or None.

    Cursors made before listings paged by id held ``[created_at, id]``; their id still says
    where the next page starts, so a client paging across an upgrade carries on.
    """
    raw = request.query.get("cursor")
    if raw is None:
        return None
    try:
        decoded: Any = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(decoded, list) or len(decoded) not in (1, 2):
            raise ValueError("bad cursor")
        return uuid.UUID(decoded[-1])
    except (ValueError, TypeError, AttributeError, binascii.Error, orjson.JSONDecodeError):
        raise bad_parameter(
            "cursor", "is not a cursor from this API; pass next_cursor back as is"
        ) from None


def encode_cursor(after: uuid.UUID | None) -> str | None:
    """The ``next_cursor`` of a page."""
    if after is None:
        return None
    return base64.urlsafe_b64encode(orjson.dumps([str(after)])).decode().rstrip("=")


def job_filter(request: web.Request, statuses: tuple[Status, ...] | None = None) -> JobFilter:
    """The listing filter from the query; ``statuses`` fixes the states (the DLQ lists dead)."""
    return JobFilter(
        statuses=statuses if statuses is not None else status_param(request),
        queue=queue_param(request),
        type=type_param(request),
        created_after=time_param(request, "created_after"),
        created_before=time_param(request, "created_before"),
        finished_after=time_param(request, "finished_after"),
        finished_before=time_param(request, "finished_before"),
        error_contains=text_param(request, "error"),
    )


def name_from(request: web.Request, kind: str, *, creating: bool = False) -> str:
    """A queue or schedule name from the path: an invalid one is a 404 when reading (it names
    nothing) and a 422 when creating."""
    raw = request.match_info["name"]
    if not QUEUE_NAME.fullmatch(raw):
        rule = f"{kind} names are 1-64 letters, digits, '_', '.', '-' (not first)"
        if creating:
            raise ApiError(
                422,
                "validation_error",
                f"invalid {kind} name {raw!r}: {rule}",
                [{"field": "name", "problem": rule}],
            )
        raise ApiError(404, f"{kind}_not_found", f"no {kind} named {raw!r} ({rule})")
    return raw
