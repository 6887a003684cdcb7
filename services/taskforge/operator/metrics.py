"""The operator's Prometheus metrics, served on its ops port next to health and readiness.

Per-autoscaler gauges carry ``{autoscaler, namespace}`` and are removed when the
WorkerAutoscaler goes away, so dashboards do not show ghosts of deleted autoscalers.
"""

from __future__ import annotations

import contextlib
import functools

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

_LABELS = ("autoscaler", "namespace")


class Metrics:
    """One set of the operator's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.backlog = Gauge(
            "taskforge_operator_backlog",
            "Backlog seen for the autoscaler's queue: stream lag + pending + due rows.",
            _LABELS,
            registry=registry,
        )
        self.desired_replicas = Gauge(
            "taskforge_operator_desired_replicas",
            "Replicas the autoscaler decided on at its last poll.",
            _LABELS,
            registry=registry,
        )
        self.current_replicas = Gauge(
            "taskforge_operator_current_replicas",
            "Replicas of the target Deployment at the autoscaler's last poll.",
            _LABELS,
            registry=registry,
        )
        self.stale = Gauge(
            "taskforge_operator_backlog_stale",
            "1 while the scheduler's backlog figures for the queue are missing or stale.",
            _LABELS,
            registry=registry,
        )
        self.decisions = Counter(
            "taskforge_operator_decisions_total",
            "Scaling decisions taken, by direction (up, down, none).",
            ("direction",),
            registry=registry,
        )
        self.errors = Counter(
            "taskforge_operator_errors_total",
            "Polls that could not observe or act, by reason.",
            ("reason",),
            registry=registry,
        )

    def observe(
        self,
        name: str,
        namespace: str,
        *,
        backlog: int,
        current: int,
        desired: int,
        stale: bool,
    ) -> None:
        self.backlog.labels(name, namespace).set(backlog)
        self.current_replicas.labels(name, namespace).set(current)
        self.desired_replicas.labels(name, namespace).set(desired)
        self.stale.labels(name, namespace).set(1 if stale else 0)

    def forget(self, name: str, namespace: str) -> None:
        for gauge in (self.backlog, self.current_replicas, self.desired_replicas, self.stale):
            with contextlib.suppress(KeyError):
                gauge.remove(name, namespace)


@functools.cache
def default_metrics() -> Metrics:
    """The process-wide metrics in the default registry (what ``/metrics`` serves)."""
    return Metrics(REGISTRY)
