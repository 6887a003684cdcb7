"""Cron schedules: expression checks, tick arithmetic, and the loop that makes their jobs.

Expressions have 5 fields (``minute hour day month weekday``) or 6 with seconds first
(``second minute hour day month weekday``), evaluated by croniter in the schedule's time
zone. Each tick makes exactly one job, even with several scheduler replicas: schedules are
taken ``FOR UPDATE SKIP LOCKED``, and the job's idempotency key names the schedule and the
tick, so a tick seen twice still inserts once.

Late ticks (the scheduler was down) follow the schedule's ``catchup`` policy:

- ``skip``: ticks more than :data:`MISFIRE_GRACE` seconds late are dropped;
- ``latest``: only the most recent missed tick runs;
- ``all``: every missed tick runs (at most :data:`MAX_TICKS_PER_PASS` per pass).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from aiohttp import web
from croniter import croniter

from taskforge import lifecycle
from taskforge.lifecycle.schedules import Schedule
from taskforge.resources import POOL, wait_first

log = logging.getLogger("taskforge.scheduler")

CATCHUP_POLICIES = ("skip", "latest", "all")
MISFIRE_GRACE = 60.0
MAX_TICKS_PER_PASS = 100
SCHEDULES_PER_PASS = 100
POLL_SECONDS = 1.0


def check_expression(expr: str) -> str | None:
    """Why ``expr`` is not a usable cron expression, or None when it is."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        return (
            f"has {len(fields)} fields; use 5 (minute hour day month weekday) "
            "or 6 (second minute hour day month weekday)"
        )
    if not croniter.is_valid(expr, second_at_beginning=len(fields) == 6):
        return "is not a valid cron expression, e.g. '*/5 * * * *' or '0 */5 * * * *'"
    return None


def check_timezone(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone, or None when it is."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: zoneinfo looks the name up as a file; a very long one is ENAMETOOLONG.
        return "is not an IANA time zone name, e.g. UTC or Europe/Berlin"
    return None


def ticks(expr: str, timezone: str, after: datetime) -> croniter:
    """An iterator of ticks strictly after ``after``, in ``timezone``."""
    start = after.astimezone(ZoneInfo(timezone))
    return croniter(expr, start, second_at_beginning=len(expr.split()) == 6)


def next_tick(expr: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (UTC)."""
    value: datetime = ticks(expr, timezone, after).get_next(datetime)
    return value.astimezone(UTC)


def plan(schedule: Schedule, now: datetime) -> tuple[list[datetime], datetime]:
    """Ticks to make jobs for now, and the schedule's next ``next_run_at``."""
    expr, zone = schedule.cron, schedule.timezone
    due: list[datetime] = []
    tick = schedule.next_run_at
    it = ticks(expr, zone, tick)
    while tick <= now and len(due) < MAX_TICKS_PER_PASS:
        due.append(tick)
        tick = it.get_next(datetime).astimezone(UTC)
    if schedule.catchup == "all":
        return due, tick  # any rest comes in the next passes
    if tick <= now:
        # More ticks were missed than we walked (a long outage): find the latest directly.
        # Ticks fall on whole seconds, so the latest one <= now is the one before floor+1s.
        start = now.replace(microsecond=0) + timedelta(seconds=1)
        previous = croniter(
            expr, start.astimezone(ZoneInfo(zone)), second_at_beginning=len(expr.split()) == 6
        )
        due = [previous.get_prev(datetime).astimezone(UTC)]
        tick = next_tick(expr, zone, now)
    if schedule.catchup == "latest":
        due = due[-1:]
    else:
        due = [t for t in due if (now - t).total_seconds() <= MISFIRE_GRACE]
    return due, tick


def job_spec(schedule: Schedule, tick: datetime) -> dict[str, Any]:
    """The job of one tick: the schedule's template, due at the tick, keyed by the tick."""
    template = schedule.job
    return {
        "type": template["type"],
        "payload": template.get("payload", {}),
        "queue": template.get("queue", "default"),
        "priority": template.get("priority", 0),
        "max_attempts": template["max_attempts"],
        "timeout_seconds": template["timeout_seconds"],
        "run_at": tick,
        "delay_seconds": None,
        "idempotency_key": f"schedule:{schedule.name}:{tick.astimezone(UTC).isoformat()}",
    }


async def run_once(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Make the jobs of every due tick and advance the schedules; returns jobs created."""
    async with pool.acquire() as conn, conn.transaction():
        schedules, at = await lifecycle.due_schedules(conn, SCHEDULES_PER_PASS, now)
        if at is None:
            return 0
        specs: list[dict[str, Any]] = []
        owners: list[str] = []
        moves: list[tuple[str, datetime, datetime | None, Any]] = []
        for schedule in schedules:
            due, next_run_at = plan(schedule, at)
            for tick in due:
                specs.append(job_spec(schedule, tick))
                owners.append(schedule.name)
            moves.append((schedule.name, next_run_at, due[-1] if due else None, None))
        results = await lifecycle.submit_batch(conn, specs, [None] * len(specs))
        if any(result.created for result in results):
            await lifecycle.notify_dispatcher(conn)  # fires at commit
        last_job = {name: result.job.id for name, result in zip(owners, results, strict=True)}
        await lifecycle.advance_schedules(
            conn, [(name, nxt, last, last_job.get(name)) for name, nxt, last, _ in moves]
        )
    created = sum(result.created for result in results)
    if created:
        log.info("schedule jobs created", extra={"action": "cron.tick", "jobs": created})
    return created


async def run(app: web.Application, stop: asyncio.Event) -> None:
    """Tick every second until ``stop``; store errors are logged and retried."""
    pool = app[POOL]
    while not stop.is_set():
        try:
            await run_once(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cron pass failed", extra={"action": "cron.error", "error": repr(exc)})
        await wait_first(stop.wait(), timeout=POLL_SECONDS)


def first_run(expr: str, timezone: str) -> datetime:
    """The first tick of a new schedule: the next one after now."""
    return next_tick(expr, timezone, datetime.now(UTC))
