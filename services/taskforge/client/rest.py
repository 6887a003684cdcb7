"""The async REST client: one method per API operation, JSON in and out.

Methods return the API's JSON (plain dicts, as documented at ``/openapi.json``) and raise
:class:`TaskforgeError` carrying the API's error code, message and details.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset({"completed", "dead", "cancelled"})
Json = dict[str, Any]


class TaskforgeError(Exception):
    """The API refused a request; ``code`` is stable, ``message`` says what to do."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Client:
    """An API client; use ``async with Client() as client:`` or call :meth:`close`.

    ``base_url`` defaults to ``TASKFORGE_API_URL`` (else ``http://127.0.0.1:8080``) and
    ``token`` to ``TASKFORGE_API_TOKEN``.
    """

    def __init__(
        self, base_url: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.base_url = (base_url or os.environ.get("TASKFORGE_API_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("TASKFORGE_API_TOKEN")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call the API; the decoded JSON body (None for 204) or :class:`TaskforgeError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        async with self._session.request(
            method, self.base_url + path, json=json, params=query, headers=headers
        ) as response:
            if response.status == 204:
                return None
            body = await response.json(content_type=None)
            if response.status >= 400:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                raise TaskforgeError(
                    response.status,
                    error.get("code", "http_error"),
                    error.get("message", response.reason or ""),
                    error.get("details"),
                )
            return body

    # -- jobs -----------------------------------------------------------------------------

    async def submit(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Submit a job; the stored job (an existing one for a repeated idempotency key)."""
        body = _drop_none(
            {
                "type": type,
                "payload": payload,
                "queue": queue,
                "priority": priority,
                "max_attempts": max_attempts,
                "timeout_seconds": timeout_seconds,
                "run_at": run_at.isoformat() if run_at else None,
                "delay_seconds": delay_seconds,
            }
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        job: Json = await self.request("POST", "/v1/jobs", json=body, headers=headers)
        return job

    async def submit_batch(self, jobs: list[Json], *, minimal: bool = False) -> Json:
        """Submit up to 1,000 jobs (each may carry ``idempotency_key``); per-job results.

        ``minimal`` asks for ids only (``Prefer: return=minimal``): no job documents to
        build, send and parse when the caller needs nothing more.
        """
        headers = {"Prefer": "return=minimal"} if minimal else None
        result: Json = await self.request(
            "POST", "/v1/jobs/batch", json={"jobs": jobs}, headers=headers
        )
        return result

    async def get(self, job_id: str) -> Json:
        """A job by id."""
        job: Json = await self.request("GET", f"/v1/jobs/{job_id}")
        return job

    async def events(self, job_id: str) -> list[Json]:
        """A job's history, oldest first."""
        body = await self.request("GET", f"/v1/jobs/{job_id}/events")
        events: list[Json] = body["events"]
        return events

    async def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.5) -> Json:
        """Poll until the job is completed, dead or cancelled; TimeoutError past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            await asyncio.sleep(poll)

    async def cancel(self, job_id: str) -> Json:
        """Cancel a waiting job at once, or ask a running job's worker to stop it."""
        job: Json = await self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return job

    async def retry(self, job_id: str) -> Json:
        """Run a completed, cancelled or dead job again."""
        job: Json = await self.request("POST", f"/v1/jobs/{job_id}/retry")
        return job

    async def list(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> Json:
        """One page of jobs, newest first: ``{"jobs": [...], "next_cursor": ...}``.

        Filters: ``status`` (a state or a list), ``queue``, ``type``, ``created_after``,
        ``created_before``, ``finished_after``, ``finished_before``, ``error``.
        """
        page: Json = await self.request(
            "GET", "/v1/jobs", params={**_filters(filters), "limit": limit, "cursor": cursor}
        )
        return page

    async def iter_jobs(self, *, page_size: int = 200, **filters: Any) -> AsyncIterator[Json]:
        """Every job matching the filters, following the cursors."""
        cursor = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor, **filters)
            for job in page["jobs"]:
                yield job
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # -- dead letters ---------------------------------------------------------------------

    async def dlq(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> Json:
        """One page of dead jobs (filters as :meth:`list`, without ``status``)."""
        page: Json = await self.request(
            "GET", "/v1/dlq", params={**_filters(filters), "limit": limit, "cursor": cursor}
        )
        return page

    async def move_to_dlq(self, job_id: str, reason: str | None = None) -> Json:
        """Make a waiting job dead with a reason."""
        body = {"reason": reason} if reason else None
        job: Json = await self.request("POST", f"/v1/jobs/{job_id}/dlq", json=body)
        return job

    async def replay(self, job_id: str) -> Json:
        """Send a dead job back to pending with its attempts reset."""
        job: Json = await self.request("POST", f"/v1/dlq/{job_id}/replay")
        return job

    async def replay_matching(self, *, dry_run: bool = False, **match: Any) -> Json:
        """Replay dead jobs by ``type``, ``queue``, ``error``, ``died_after``/``died_before``."""
        body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in match.items()}
        result: Json = await self.request(
            "POST", "/v1/dlq/replay", json={**_drop_none(body), "dry_run": dry_run}
        )
        return result

    # -- queues and schedules -------------------------------------------------------------

    async def queues(self) -> builtins.list[Json]:
        """Every queue with its stats."""
        body = await self.request("GET", "/v1/queues")
        queues: builtins.list[Json] = body["queues"]
        return queues

    async def queue(self, name: str) -> Json:
        """One queue's stats."""
        queue: Json = await self.request("GET", f"/v1/queues/{name}")
        return queue

    async def pause(self, name: str) -> Json:
        """Stop dispatching a queue's jobs."""
        queue: Json = await self.request("POST", f"/v1/queues/{name}/pause")
        return queue

    async def resume(self, name: str) -> Json:
        """Dispatch a queue's jobs again."""
        queue: Json = await self.request("POST", f"/v1/queues/{name}/resume")
        return queue

    async def set_concurrency(self, name: str, limit: int | None) -> Json:
        """Cap a queue's queued + running jobs across all workers (None: no cap)."""
        queue: Json = await self.request("PATCH", f"/v1/queues/{name}", json={"concurrency": limit})
        return queue

    async def put_schedule(self, name: str, cron: str, job: Json, **options: Any) -> Json:
        """Create or replace a schedule (options: ``timezone``, ``catchup``, ``paused``)."""
        body = {"cron": cron, "job": job, **options}
        schedule: Json = await self.request("PUT", f"/v1/schedules/{name}", json=body)
        return schedule

    async def schedules(self) -> builtins.list[Json]:
        """Every schedule."""
        body = await self.request("GET", "/v1/schedules")
        schedules: builtins.list[Json] = body["schedules"]
        return schedules

    async def delete_schedule(self, name: str) -> None:
        """Remove a schedule."""
        await self.request("DELETE", f"/v1/schedules/{name}")


def _filters(filters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if isinstance(value, list | tuple | set | frozenset):
            value = ",".join(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out
