"""Cron schedules: the API accepts them, and each tick makes exactly one job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from taskforge import lifecycle, store
from taskforge.scheduler import cron
from tests.integration.api_support import api, assert_error, get_json

__all__ = ["api"]

TEMPLATE = {
    "type": "ping",
    "payload": {"message": "tick"},
    "queue": "default",
    "priority": 0,
    "max_attempts": 3,
    "timeout_seconds": 30.0,
}


async def test_schedules_are_accepted_read_listed_and_deleted(api):
    body = {
        "cron": "*/5 * * * *",
        "timezone": "Europe/Berlin",
        "catchup": "latest",
        "job": {"type": "report.daily", "payload": {"to": "ops"}},
    }
    created = await api.put("/v1/schedules/daily-report", json=body)
    assert created.status == 201
    schedule = await created.json()
    assert schedule["cron"] == "*/5 * * * *" and schedule["timezone"] == "Europe/Berlin"
    assert schedule["job"]["type"] == "report.daily" and schedule["job"]["max_attempts"] == 5
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert next_run > datetime.now(UTC) and next_run.minute % 5 == 0
    replaced = await api.put("/v1/schedules/daily-report", json={**body, "catchup": "all"})
    assert replaced.status == 200
    assert (await replaced.json())["next_run_at"] == schedule["next_run_at"]  # same cron
    six = await api.put(
        "/v1/schedules/every-10s", json={"cron": "*/10 * * * * *", "job": {"type": "ping"}}
    )
    assert six.status == 201
    assert datetime.fromisoformat((await six.json())["next_run_at"]).second % 10 == 0
    listed = await get_json(api, "/v1/schedules")
    assert [s["name"] for s in listed["schedules"]] == ["daily-report", "every-10s"]
    assert (await get_json(api, "/v1/schedules/every-10s"))["catchup"] == "skip"
    assert (await api.delete("/v1/schedules/every-10s")).status == 204
    assert_error(await get_json(api, "/v1/schedules/every-10s", status=404), "schedule_not_found")
    assert (await api.delete("/v1/schedules/every-10s")).status == 404


async def test_invalid_schedules_are_rejected_naming_each_field(api):
    response = await api.put(
        "/v1/schedules/bad",
        json={
            "cron": "61 * * * *",
            "timezone": "Mars/Olympus",
            "catchup": "sometimes",
            "job": {"type": "ping", "priority": 999},
        },
    )
    assert response.status == 422
    fields = {p["field"] for p in (await response.json())["error"]["details"]}
    assert fields == {"cron", "timezone", "catchup", "job.priority"}
    too_short = await api.put("/v1/schedules/bad", json={"cron": "* *", "job": {"type": "x"}})
    assert "5" in (await too_short.json())["error"]["message"]
    with_time = await api.put(
        "/v1/schedules/bad", json={"cron": "* * * * *", "job": {"type": "ping", "delay_seconds": 5}}
    )
    assert with_time.status == 422


async def _schedule(
    pool, name: str, next_run_at: datetime, catchup: str = "skip", expr: str = "* * * * *"
) -> None:
    async with pool.acquire() as conn:
        await lifecycle.put_schedule(conn, name, expr, "UTC", TEMPLATE, catchup, False, next_run_at)


async def _jobs(pool) -> list:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM jobs ORDER BY run_at")


async def test_each_tick_makes_exactly_one_job_with_several_schedulers(pool, stores):
    tick = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    await _schedule(pool, "minutely", tick)
    now = tick + timedelta(seconds=5)
    replicas = [await store.create_pool(stores.postgres_url, max_size=2) for _ in range(3)]
    try:
        created = await asyncio.gather(*(cron.run_once(p, now) for p in replicas for _ in "ab"))
    finally:
        for p in replicas:
            await p.close()
    assert sum(created) == 1
    jobs = await _jobs(pool)
    assert len(jobs) == 1
    assert (
        jobs[0]["run_at"] == tick
        and jobs[0]["idempotency_key"] == f"schedule:minutely:{tick.isoformat()}"
    )
    assert jobs[0]["payload"] == {"message": "tick"} and jobs[0]["max_attempts"] == 3
    async with pool.acquire() as conn:
        schedule = await lifecycle.get_schedule(conn, "minutely")
    assert schedule.next_run_at == tick + timedelta(minutes=1)
    assert schedule.last_run_at == tick and schedule.last_job_id == jobs[0]["id"]
    # The same tick again (a replica that read the old next_run_at) makes nothing new.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE schedules SET next_run_at = $1", tick)
    assert await cron.run_once(pool, now) == 0
    assert len(await _jobs(pool)) == 1


async def test_missed_ticks_follow_the_catchup_policy(pool):
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    late = start + timedelta(minutes=10, seconds=30)  # ticks 12:00 … 12:10 were missed
    await _schedule(pool, "all", start, "all")
    await _schedule(pool, "latest", start, "latest")
    await _schedule(pool, "skip", start, "skip")
    assert await cron.run_once(pool, late) == 11 + 1 + 1  # skip keeps the 30 s late tick
    jobs = await _jobs(pool)
    by_schedule: dict[str, list[datetime]] = {}
    for job in jobs:
        name = job["idempotency_key"].split(":")[1]
        by_schedule.setdefault(name, []).append(job["run_at"])
    assert by_schedule["all"] == [start + timedelta(minutes=m) for m in range(11)]
    assert by_schedule["latest"] == [start + timedelta(minutes=10)]
    assert by_schedule["skip"] == [start + timedelta(minutes=10)]
    async with pool.acquire() as conn:
        schedules = {s.name: s for s in await lifecycle.list_schedules(conn)}
    assert {s.next_run_at for s in schedules.values()} == {start + timedelta(minutes=11)}
    # Far too late for skip: nothing runs, the schedule moves on.
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM schedules")
    await _schedule(pool, "skip2", start, "skip", "0 * * * *")
    assert await cron.run_once(pool, start + timedelta(minutes=10)) == 0
    async with pool.acquire() as conn:
        skip2 = await lifecycle.get_schedule(conn, "skip2")
    assert skip2 is not None and skip2.next_run_at == start + timedelta(hours=1)


async def test_paused_schedules_make_no_jobs(pool):
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    async with pool.acquire() as conn:
        await lifecycle.put_schedule(conn, "p", "* * * * *", "UTC", TEMPLATE, "all", True, start)
    assert await cron.run_once(pool, start + timedelta(minutes=5)) == 0
