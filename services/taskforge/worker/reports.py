"""What the worker tells of the outcomes it recorded: counters, a log line per finish, the
dead-letter notices of the jobs that went dead, and what it left unrecorded at shutdown."""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from taskforge import lifecycle, metrics
from taskforge.jobs import Status

if TYPE_CHECKING:
    from taskforge.worker.finishing import FinishItem

log = logging.getLogger("taskforge.worker")


def count_outcomes(batch: list[FinishItem]) -> None:
    """Outcome counters and the runtime histogram, one update per job type and batch."""
    by_series: dict[tuple[str, str], list[FinishItem]] = {}
    for item in batch:
        if item.job is not None:
            by_series.setdefault((item.queue, item.job.type), []).append(item)
    for (queue, job_type), items in by_series.items():
        series = metrics.job_series(queue, job_type)
        metrics.observe_many(series.runtime, [i.runtime for i in items if i.runtime is not None])
        by_status = Counter(item.outcome.status for item in items)
        completed = by_status.pop(Status.COMPLETED, 0)
        if completed:
            series.success.inc(completed)
        for status, count in by_status.items():
            series.failure(status.value).inc(count)


def log_finishes(items: list[FinishItem], done: list[lifecycle.Finished]) -> None:
    """A line per finish that took effect, with the trace ids of its span."""
    # The span has ended by now: its ids come along so the line joins the trace.
    trace_ids = {f.outcome.job_id: f.extra for f in items}
    for finished in done:
        log.info(
            "job finished",
            extra={
                "action": "job.finish",
                "job_id": str(finished.id),
                "queue": finished.queue,
                "type": finished.type,
                "status": finished.status.value,
                "attempt": finished.attempts,
                **trace_ids.get(finished.id, {}),
                **(
                    {"error": (finished.last_error or "")[:500]}
                    if finished.status is not Status.COMPLETED
                    else {}
                ),
            },
        )


def dead_notices(done: list[lifecycle.Finished]) -> list[dict[str, Any]]:
    """The dead-letter notices (:func:`taskforge.streams.publish_dead`) of the jobs ``done``
    made dead."""
    return [
        {
            "job_id": d.id,
            "type": d.type,
            "queue": d.queue,
            "attempts": d.attempts,
            "error": d.last_error,
            "headers": {"traceparent": d.traceparent} if d.traceparent else {},
        }
        for d in done
        if d.status is Status.DEAD
    ]


def log_left_at_shutdown(outcomes: int, handbacks: int, unacked: int, budget: float) -> None:
    """One error line for what the finisher could not record, hand back or ack within its
    shutdown ``budget`` (seconds); nothing when it left nothing."""
    left = [
        f"{count} {what}"
        for count, what in (
            (outcomes, "outcomes not recorded"),
            (handbacks, "attempts not handed back"),
            (unacked, "entries not acked"),
        )
        if count
    ]
    if not left:
        return
    log.error(
        f"shutting down with {' and '.join(left)} after {budget:g}s; the reaper rescues "
        "their jobs when their leases lapse",
        extra={
            "action": "worker.shutdown.unrecorded",
            "outcomes": outcomes,
            "handbacks": handbacks,
            "unacked": unacked,
        },
    )
