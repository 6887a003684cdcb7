"""Transactional enqueue: insert a job with the caller's own asyncpg connection.

Called inside the caller's transaction, the job commits or rolls back with the caller's
other writes — an order and its confirmation email, never one without the other::

    async with pool.acquire() as conn, conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders ... RETURNING id")
        await enqueue(conn, "email.confirm", {"order_id": order_id})

The same validation and defaults as ``POST /v1/jobs`` apply. The connection needs the
jsonb codec taskforge uses: take it from :func:`taskforge.store.create_pool`, or create your
pool with ``init=taskforge.client.init_connection``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from taskforge import lifecycle, store
from taskforge.api.errors import ApiError
from taskforge.api.validation import request_hash, validate_idempotency_key, validate_job
from taskforge.config import Settings, load_settings
from taskforge.jobs import Job

init_connection = store._init_connection
"""Pass as ``asyncpg.create_pool(init=...)``: jsonb read and written as Python objects."""


async def enqueue(
    conn: Any,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    timeout_seconds: float | None = None,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
) -> Job:
    """Insert a pending job on ``conn``; the job (an existing one for a repeated key).

    Raises ValueError for an invalid job or a reused idempotency key with another job, and
    TypeError when ``conn`` lacks taskforge's jsonb codec. Defaults for ``max_attempts`` and
    ``timeout_seconds`` come from ``settings`` (else the ``TASKFORGE_*`` environment).
    """
    body: dict[str, Any] = {"type": type, "payload": payload or {}, "queue": queue}
    body["priority"] = priority
    for name, value in (
        ("max_attempts", max_attempts),
        ("timeout_seconds", timeout_seconds),
        ("run_at", run_at.isoformat() if run_at is not None else None),
        ("delay_seconds", delay_seconds),
    ):
        if value is not None:
            body[name] = value
    try:
        key = validate_idempotency_key(idempotency_key)
        values = validate_job(body, settings or load_settings())
    except ApiError as exc:
        raise ValueError(exc.message) from None
    values["idempotency_key"] = key
    fingerprint = request_hash(body) if key else None
    try:
        outcome = await lifecycle.submit(conn, values, fingerprint)
    except asyncpg.DataError as exc:
        if "expected str" not in str(exc):
            raise
        raise TypeError(
            "this connection reads jsonb as text; use taskforge.store.create_pool or create "
            "the pool with init=taskforge.client.init_connection"
        ) from exc
    if not outcome.created and outcome.request_hash != fingerprint:
        raise ValueError(
            f"idempotency key {key!r} was already used for another job ({outcome.job.id})"
        )
    # Wakes the dispatcher when (and only if) the caller commits.
    await lifecycle.notify_dispatcher(conn)
    return outcome.job
