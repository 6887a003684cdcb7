"""The job model: states, the job record, the submitted job spec, backoff and ids."""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from asyncpg.pgproto.pgproto import UUID as _AsyncpgUUID

Json = Any
"""A value orjson can encode: dict, list, str, int, float, bool or None."""


class Status(StrEnum):
    """Where a job is in its life; see DESIGN's state table for who moves it out."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"


_STATUSES = {status.value: status for status in Status}


def status_of(value: str) -> Status:
    """The :class:`Status` of a row's status text: a dict lookup, where ``Status(value)``
    (EnumType.__call__) showed in the profiles of paths that convert one per job."""
    return _STATUSES[value]


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.DEAD, Status.CANCELLED})
WAITING_STATUSES = frozenset({Status.PENDING, Status.RETRYING, Status.QUEUED})
DISPATCHABLE_STATUSES = frozenset({Status.PENDING, Status.RETRYING})


@dataclass(frozen=True)
class JobSpec:
    """What a client submits. Defaults for unset fields come from the settings."""

    type: str
    payload: dict[str, Json] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    timeout_seconds: float | None = None
    run_at: datetime | None = None
    delay_seconds: float | None = None
    idempotency_key: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class Job(NamedTuple):
    """A job as PostgreSQL records it.

    Set by the client: ``type``, ``payload``, ``queue``, ``priority``, ``max_attempts``,
    ``timeout_seconds``, ``run_at``. Set by taskforge: everything else.
    """

    id: uuid.UUID
    queue: str
    type: str
    payload: dict[str, Json]
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    timeout_seconds: float
    idempotency_key: str | None
    traceparent: str | None
    tracestate: str | None
    stream_id: str | None
    lease_expires_at: datetime | None
    worker: str | None
    last_error: str | None
    result: Json
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """Build from an asyncpg record holding every ``jobs`` column."""
        return cls(
            id=row["id"],
            queue=row["queue"],
            type=row["type"],
            payload=row["payload"],
            status=status_of(row["status"]),
            priority=row["priority"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            run_at=row["run_at"],
            timeout_seconds=row["timeout_seconds"],
            idempotency_key=row["idempotency_key"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
            stream_id=row["stream_id"],
            lease_expires_at=row["lease_expires_at"],
            worker=row["worker"],
            last_error=row["last_error"],
            result=row["result"],
            cancel_requested=row["cancel_requested"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    @classmethod
    def submitted(
        cls,
        job_id: uuid.UUID,
        spec: dict[str, Any],
        run_at: datetime,
        created_at: datetime,
        traceparent: str | None,
        tracestate: str | None,
    ) -> Job:
        """The row a batch insert just stored, from its spec and the two values PostgreSQL
        chose (due time, creation time): the columns' defaults for the rest, as migration
        0001 declares them. Reading all 24 columns back cost the api 3 µs a job and
        PostgreSQL their output; a test holds this equal to the row as read back."""
        return cls(
            id=job_id,
            queue=spec["queue"],
            type=spec["type"],
            payload=spec["payload"],
            status=Status.PENDING,
            priority=spec["priority"],
            attempts=0,
            max_attempts=spec["max_attempts"],
            run_at=run_at,
            timeout_seconds=float(spec["timeout_seconds"]),
            idempotency_key=spec.get("idempotency_key"),
            traceparent=traceparent,
            tracestate=tracestate,
            stream_id=None,
            lease_expires_at=None,
            worker=None,
            last_error=None,
            result=None,
            cancel_requested=False,
            created_at=created_at,
            updated_at=created_at,
            started_at=None,
            finished_at=None,
        )

    def to_json(self) -> dict[str, Json]:
        """The job as the REST API shows it.

        Timestamps stay ``datetime``: every response goes through orjson
        (:func:`taskforge.api.responses.json_response`), which writes them in RFC 3339
        exactly as ``isoformat`` would, at a fraction of the cost (the ``isoformat`` calls
        were a tenth of a batch submit's CPU). The id is text: asyncpg's UUID type is not
        one orjson knows.
        """
        return {
            "id": str(self.id),
            "queue": self.queue,
            "type": self.type,
            "payload": self.payload,
            "status": self.status.value,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": self.run_at,
            "timeout_seconds": self.timeout_seconds,
            "idempotency_key": self.idempotency_key,
            "last_error": self.last_error,
            "result": self.result,
            "cancel_requested": self.cancel_requested,
            "worker": self.worker,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "traceparent": self.traceparent,
        }


def has_nul(value: Any) -> bool:
    """Whether a JSON value holds U+0000 anywhere (keys too): jsonb and text reject it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


def backoff_delay(
    attempt: int, base: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, base * 2**(attempt-1))].

    Full jitter spreads a burst of failures out instead of retrying them in lockstep.
    """
    ceiling = min(maximum, base * (2 ** max(attempt - 1, 0))) if attempt < 64 else maximum
    return (rng or random).uniform(0.0, ceiling)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (version 7): 48-bit Unix milliseconds then random bits.

    Time order keeps the primary key index append-mostly and makes ids sort by creation.
    """
    return uuid7s(1)[0]


def uuid7s(count: int) -> list[uuid.UUID]:
    """``count`` UUIDv7s with one read of the OS's random source (a syscall per id was a
    twentieth of a batch submit's CPU).

    They are asyncpg's UUIDs (:func:`fast_uuid`), the type of every id read back from
    PostgreSQL: ``uuid.UUID(int=…)`` took 2.6 µs an id against 1.2, and a batch matches its
    returned rows to its ids without comparing across the two types (0.7 → 0.24 µs a job).
    """
    millis = time.time_ns() // 1_000_000
    prefix = ((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62)
    pool = os.urandom(10 * count)
    ids = []
    for offset in range(0, 10 * count, 10):
        rand = int.from_bytes(pool[offset : offset + 10], "big")
        value = prefix | ((rand >> 62) & 0xFFF) << 64 | rand & ((1 << 62) - 1)
        ids.append(fast_uuid(value.to_bytes(16, "big")))
    return ids


def fast_uuid(value: str | bytes) -> uuid.UUID:
    """A UUID from its text or its 16 bytes, as asyncpg's own type: a ``uuid.UUID`` subclass
    (equal to and hashed like the standard one) built, printed and encoded in C. Raises
    ``ValueError`` for anything that is not a UUID."""
    made: uuid.UUID = _AsyncpgUUID(value)
    return made
