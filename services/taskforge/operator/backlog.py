"""Reading a queue's backlog from Redis: the job stream and the scheduler's figures.

Backlog = lag + pending of the ``workers`` group on ``taskforge:{<queue>}:jobs`` (entries not
yet delivered, and delivered but not acknowledged: i.e. running or about to) + ``due`` from
the scheduler's hash ``taskforge:{<queue>}:backlog`` (rows due in PostgreSQL that the
dispatcher has not put into the stream yet). Counting all three is what a scaler watching one
signal misses: lag alone ignores in-flight work, pending alone ignores queued work, and
neither sees jobs that are due but held back in PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

GROUP = "workers"


class BacklogUnavailable(Exception):
    """Redis could not be asked for the backlog (unreachable, refused, timed out)."""


def stream_key(queue: str) -> str:
    return f"taskforge:{{{queue}}}:jobs"


def figures_key(queue: str) -> str:
    return f"taskforge:{{{queue}}}:backlog"


@dataclass(frozen=True)
class StreamBacklog:
    lag: int
    """Entries not yet delivered to the group (all of the stream when the group is missing)."""
    pending: int
    """Entries delivered and not yet acknowledged."""
    lag_estimated: bool = False
    """Redis could not tell the lag; it was counted (up to a cap) from the stream itself."""


@dataclass(frozen=True)
class SchedulerFigures:
    due: int
    running: int
    updated_at: float


@dataclass(frozen=True)
class Backlog:
    """Everything read for one queue in one poll."""

    stream: StreamBacklog
    figures: SchedulerFigures | None
    """None when the hash is missing or unreadable."""
    stale: bool
    """The figures are missing or older than the autoscaler's staleness limit."""

    @property
    def total(self) -> int:
        """lag + pending + due; without trusted figures, the stream alone."""
        due = self.figures.due if self.figures is not None and not self.stale else 0
        return self.stream.lag + self.stream.pending + due

    @property
    def running(self) -> int | None:
        """Jobs running, or None when the figures cannot be trusted."""
        return self.figures.running if self.figures is not None and not self.stale else None


async def read_stream(client: aioredis.Redis, queue: str, lag_cap: int) -> StreamBacklog:
    """Lag and pending of the ``workers`` group.

    ``XINFO GROUPS`` reports ``lag`` from Redis 7; it is nil when Redis cannot compute it
    (entries deleted from the middle of the stream, a group created at an arbitrary id) and
    absent before 7. Then the undelivered entries after ``last-delivered-id`` are counted with
    ``XRANGE``, but only up to ``lag_cap``: the caller passes the backlog at which its answer
    saturates (max replicas * target), so the count is exact wherever it matters and the cost
    stays bounded on a huge stream. An XLEN estimate would count acknowledged entries not yet
    trimmed, and would keep workers up for work already done.
    """
    key = stream_key(queue)
    try:
        groups: list[dict[str, Any]] = await client.xinfo_groups(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return StreamBacklog(lag=0, pending=0)  # no stream yet: nothing was ever queued
        raise
    group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
    if group is None:
        # The stream exists but no worker ever joined: every entry is waiting.
        return StreamBacklog(lag=int(await client.xlen(key)), pending=0)
    pending = int(group.get("pending") or 0)
    lag = group.get("lag")
    if lag is not None:
        return StreamBacklog(lag=int(lag), pending=pending)
    last = _text(group.get("last-delivered-id")) or "0-0"
    entries = await client.xrange(key, min=f"({last}", max="+", count=max(lag_cap, 1))
    return StreamBacklog(lag=len(entries or ()), pending=pending, lag_estimated=True)


async def read_figures(client: aioredis.Redis, queue: str) -> SchedulerFigures | None:
    """The scheduler's ``due``/``running``/``updated_at``; None when missing or malformed."""
    raw: Mapping[Any, Any] = await client.hgetall(figures_key(queue))
    values = {_text(k): _text(v) for k, v in raw.items()}
    try:
        return SchedulerFigures(
            due=max(int(values["due"]), 0),
            running=max(int(values["running"]), 0),
            updated_at=float(values["updated_at"]),
        )
    except (KeyError, ValueError):
        return None


async def read_backlog(
    client: aioredis.Redis,
    queue: str,
    *,
    stale_after: float,
    lag_cap: int,
    now: float | None = None,
) -> Backlog:
    """Read one queue's backlog; raise :class:`BacklogUnavailable` when Redis cannot answer."""
    try:
        stream = await read_stream(client, queue, lag_cap)
        figures = await read_figures(client, queue)
    except (OSError, RedisError) as exc:
        raise BacklogUnavailable(f"{type(exc).__name__}: {exc}") from exc
    now = time.time() if now is None else now
    stale = figures is None or now - figures.updated_at > stale_after
    return Backlog(stream=stream, figures=figures, stale=stale)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
