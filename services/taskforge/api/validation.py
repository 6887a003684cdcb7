"""Validation of submitted jobs: what a client sent becomes resolved insert values, or a 422
listing every problem with the field that has it.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from taskforge.api.errors import ApiError
from taskforge.config import QUEUE_NAME, Settings
from taskforge.jobs import has_nul

JOB_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
FIELDS = {
    "type",
    "payload",
    "queue",
    "priority",
    "max_attempts",
    "timeout_seconds",
    "run_at",
    "delay_seconds",
}
MAX_PRIORITY = 100
MAX_ATTEMPTS = 100
MAX_TIMEOUT = 7 * 86400.0
MAX_DELAY = 366 * 86400.0
MAX_KEY_LENGTH = 200


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def request_hash(body: Any) -> str:
    """Fingerprint of a request body, independent of key order and whitespace."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_json(raw: bytes) -> Any:
    """The request body as JSON, or a 400 naming the problem."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def validate_idempotency_key(key: str | None) -> str | None:
    """The Idempotency-Key header, checked: 1-200 printable characters."""
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
        )
    return key


def nul_free(raw: bytes) -> bool:
    """Whether JSON text ``raw`` certainly holds no U+0000: JSON can write that character
    only as the escape ``\\u0000`` (a raw NUL byte is not valid JSON), so without those six
    bytes anywhere no string in it has one. One scan in C of the whole body, where
    :func:`has_nul` walks every value of every job in Python (5% of a batch submit's CPU).
    """
    return b"\\u0000" not in raw


def validate_job(body: Any, settings: Settings, *, known_nul_free: bool = False) -> dict[str, Any]:
    """Resolved values for :func:`taskforge.lifecycle.submit`, or ApiError(422) with details.

    ``known_nul_free``: the body came from JSON text that :func:`nul_free` cleared, so its
    payload need not be searched for U+0000 again.
    """
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "validation_error",
            "a job must be a JSON object",
            [{"field": "", "problem": f"got {type(body).__name__}"}],
        )
    problems: list[dict[str, str]] = []

    def bad(field: str, problem: str) -> None:
        problems.append({"field": field, "problem": problem})

    for unknown in sorted(set(body) - FIELDS):
        bad(unknown, f"unknown field; allowed: {', '.join(sorted(FIELDS))}")

    job_type = body.get("type")
    if job_type is None:
        bad("type", 'required: the job type, e.g. "ping"')
    elif not isinstance(job_type, str) or not JOB_TYPE.fullmatch(job_type):
        bad("type", "must be a string of 1-200 letters, digits, '_', '.', ':', '-'")

    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        bad("payload", "must be a JSON object")
    elif not known_nul_free and has_nul(payload):
        bad("payload", "must not contain the NUL character (\\u0000): PostgreSQL cannot store it")

    queue = body.get("queue", "default")
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        bad("queue", "must be 1-64 letters, digits, '_', '.', '-', starting with a letter or digit")

    priority = body.get("priority", 0)
    if not _is_int(priority) or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        bad(
            "priority",
            f"must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY} (higher runs first)",
        )

    max_attempts = body.get("max_attempts", settings.max_attempts)
    if not _is_int(max_attempts) or not 1 <= max_attempts <= MAX_ATTEMPTS:
        bad("max_attempts", f"must be an integer from 1 to {MAX_ATTEMPTS}")

    timeout = body.get("timeout_seconds", settings.job_timeout)
    if not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        bad("timeout_seconds", f"must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")

    run_at: datetime | None = None
    delay: float | None = None
    if "run_at" in body and "delay_seconds" in body:
        bad("run_at", "give run_at or delay_seconds, not both")
    elif "run_at" in body:
        run_at = _parse_time(body["run_at"], bad)
    elif "delay_seconds" in body:
        value = body["delay_seconds"]
        if not _is_number(value) or not 0 <= value <= MAX_DELAY:
            bad("delay_seconds", f"must be a number of seconds from 0 to {MAX_DELAY:g}")
        else:
            delay = float(value)

    if problems:
        raise ApiError(
            422,
            "validation_error",
            "the job is invalid: "
            + "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems),
            problems,
        )
    return {
        "type": job_type,
        "payload": payload,
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout_seconds": float(timeout),
        "run_at": run_at,
        "delay_seconds": delay,
    }


def _parse_time(value: Any, bad: Any) -> datetime | None:
    if not isinstance(value, str):
        bad("run_at", "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-02T03:04:05Z")
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        bad("run_at", "is not an RFC 3339 timestamp, e.g. 2026-01-02T03:04:05Z")
        return None
    if parsed.tzinfo is None:
        bad("run_at", "needs a time zone (Z or +hh:mm)")
        return None
    try:
        # In UTC: Python takes offsets up to ±23:59, PostgreSQL only up to ±15:59 (a 500
        # where a 202 was due), and the instant is the same.
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00, before year 1 in UTC
        bad("run_at", "is out of range; send a time after the year 1 in UTC")
        return None
    if parsed > datetime.now(UTC) + timedelta(seconds=MAX_DELAY):
        bad("run_at", "is more than a year away")
        return None
    return parsed
