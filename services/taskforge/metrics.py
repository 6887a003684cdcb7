"""Prometheus metrics shared by the deployables (names are part of the product: DESIGN).

Labels are bounded: queue, type, outcome — never job ids.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)

QUEUE_DEPTH = Gauge(
    "taskforge_queue_depth",
    "Jobs waiting in a queue: due but not dispatched, plus queued in the stream",
    ["queue"],
)
OLDEST_JOB_AGE = Gauge(
    "taskforge_oldest_job_age_seconds",
    "Age of the oldest due job of a queue that has not started",
    ["queue"],
)
RUNNING_JOBS = Gauge("taskforge_running_jobs", "Jobs running in a queue", ["queue"])
DLQ_COUNT = Gauge("taskforge_dlq_count", "Jobs in the dead-letter state")

JOB_ATTEMPTS = Counter("taskforge_job_attempts_total", "Attempts started", ["queue", "type"])
JOB_SUCCESS = Counter("taskforge_job_success_total", "Attempts that completed", ["queue", "type"])
JOB_FAILURE = Counter(
    "taskforge_job_failure_total",
    "Attempts that did not complete (outcome retrying, dead or cancelled; a timeout is the "
    "first or the second)",
    ["queue", "type", "outcome"],
)
JOB_RUNTIME = Histogram(
    "taskforge_job_runtime_seconds", "Handler run time", ["queue", "type"], buckets=LATENCY_BUCKETS
)
JOB_TIME_IN_QUEUE = Histogram(
    "taskforge_job_time_in_queue_seconds",
    "From due (run_at) to claimed by a worker",
    ["queue"],
    buckets=LATENCY_BUCKETS,
)
WORKER_UTILIZATION = Gauge(
    "taskforge_worker_utilization", "Busy slots over all slots of this worker", ["queue"]
)
JOBS_RECLAIMED = Counter(
    "taskforge_jobs_reclaimed_total", "Jobs rescued by the reaper", ["queue", "reason"]
)
JOBS_SUBMITTED = Counter("taskforge_jobs_submitted_total", "Jobs accepted by the api", ["queue"])
JOBS_DISPATCHED = Counter(
    "taskforge_jobs_dispatched_total", "Jobs sent to a stream by the scheduler", ["queue"]
)
DISPATCH_BATCH = Histogram(
    "taskforge_dispatch_batch_size",
    "Jobs per dispatcher batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
SUBMIT_BATCH_SIZE = Histogram(
    "taskforge_submit_batch_size",
    "Single submits the api stored in one INSERT (group commit)",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
STALE_ENTRIES = Counter(
    "taskforge_stale_entries_total", "Stream entries acked without running", ["queue"]
)
STORE_ERRORS = Counter(
    "taskforge_store_errors_total", "Errors talking to PostgreSQL or Redis", ["store", "component"]
)
HTTP_REQUESTS = Counter(
    "taskforge_http_requests_total", "API requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "taskforge_http_request_duration_seconds",
    "API request latency",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)


class JobSeries:
    """The labelled children a worker touches per job, resolved once per (queue, type).

    ``Metric.labels()`` costs a lock and a dict lookup per call; at thousands of jobs a
    second that was a tenth of the worker's CPU.
    """

    def __init__(self, queue: str, type_: str) -> None:
        self.attempts = JOB_ATTEMPTS.labels(queue, type_)
        self.success = JOB_SUCCESS.labels(queue, type_)
        self.runtime = JOB_RUNTIME.labels(queue, type_)
        self.time_in_queue = JOB_TIME_IN_QUEUE.labels(queue)
        self.queue = queue
        self.type = type_

    def failure(self, outcome: str) -> Any:
        return JOB_FAILURE.labels(self.queue, self.type, outcome)


@functools.lru_cache(maxsize=4096)
def job_series(queue: str, type_: str) -> JobSeries:
    """Cached :class:`JobSeries` (bounded: job types are few; the cache caps a flood)."""
    return JobSeries(queue, type_)


@functools.lru_cache(maxsize=1024)
def http_series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """Cached (request counter, latency histogram) children of one route and status.

    Routes are templates, so the label sets are few; resolving them per request was about
    a twentieth of the api's CPU per single submit.
    """
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(method, route)


@functools.lru_cache(maxsize=4096)
def submitted(queue: str) -> Any:
    """The cached ``taskforge_jobs_submitted_total`` child of a queue."""
    return JOBS_SUBMITTED.labels(queue)


def observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for every amount, with one update per bucket touched.

    A worker observes two histograms per job; one locked update per bucket and batch instead
    of two per job and observation was a sixth of its CPU per job. Uses the child's buckets
    and sum as ``Histogram.observe`` does (prometheus_client 0.x); a child without them is
    observed one amount at a time (tests/unit/test_metrics.py holds both paths equal).
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts: dict[int, int] = {}
    for amount in amounts:
        # The first bound at or above the amount, as observe's scan finds it (+Inf last).
        index = bisect.bisect_left(bounds, amount)
        counts[index] = counts.get(index, 0) + 1
    total.inc(math.fsum(amounts))
    for index, count in counts.items():
        if index < len(buckets):
            buckets[index].inc(count)
