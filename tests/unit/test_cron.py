"""Cron arithmetic: expressions, time zones, the catch-up plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskforge.lifecycle.schedules import Schedule
from taskforge.scheduler import cron


def schedule(expr: str, next_run_at: datetime, catchup: str = "skip", tz: str = "UTC") -> Schedule:
    return Schedule(
        "s", expr, tz, {}, catchup, False, next_run_at, None, None, next_run_at, next_run_at
    )


def test_five_and_six_field_expressions_are_accepted_others_explained():
    assert cron.check_expression("*/5 * * * *") is None
    assert cron.check_expression("30 */5 * * * *") is None  # seconds first
    assert "fields" in (cron.check_expression("* * *") or "")
    assert "valid" in (cron.check_expression("99 * * * *") or "")
    assert cron.check_timezone("Europe/Berlin") is None
    assert cron.check_timezone("Nowhere/Special") is not None
    assert cron.check_timezone("x" * 300) is not None  # too long to be a file name


def test_six_fields_put_seconds_first():
    after = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert cron.next_tick("15 * * * * *", "UTC", after) == after + timedelta(seconds=15)


def test_ticks_follow_the_time_zone_across_dst():
    # 02:30 does not exist in Berlin on 2026-03-29; 09:00 local is 07:00 UTC in summer.
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert cron.next_tick("0 9 * * *", "Europe/Berlin", after) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )


def test_plan_on_time_runs_the_tick_and_moves_on():
    tick = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    due, nxt = cron.plan(schedule("* * * * *", tick), tick + timedelta(seconds=1))
    assert due == [tick] and nxt == tick + timedelta(minutes=1)


def test_plan_not_yet_due_runs_nothing():
    tick = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert cron.plan(schedule("* * * * *", tick), tick - timedelta(seconds=1)) == ([], tick)


def test_plan_after_a_long_outage_jumps_past_now():
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    now = start + timedelta(days=3, seconds=20)
    latest, nxt = cron.plan(schedule("* * * * * *", start, "latest"), now)
    assert latest == [now.replace(microsecond=0)] and nxt == now + timedelta(seconds=1)
    skipped, _ = cron.plan(schedule("0 * * * *", start, "skip"), now + timedelta(minutes=5))
    assert skipped == []
    every, nxt_all = cron.plan(schedule("* * * * *", start, "all"), now)
    assert len(every) == cron.MAX_TICKS_PER_PASS and nxt_all == start + timedelta(minutes=100)
