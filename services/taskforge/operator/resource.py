"""The WorkerAutoscaler custom resource: its spec read into a policy, its status written back.

The spec is a public interface (``taskforge.io/v1alpha1``); the CRD in the chart validates it
on admission, and :func:`parse_spec` validates it again so that an operator running against
an older CRD reports a bad value as a condition instead of acting on it.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskforge.config import QUEUE_NAME
from taskforge.operator.scaling import Policy

GROUP = "taskforge.io"
VERSION = "v1alpha1"
PLURAL = "workerautoscalers"
KIND = "WorkerAutoscaler"

STALE_MINIMUM = 30.0
"""Scheduler figures older than max(3 * pollIntervalSeconds, this) are stale."""


class SpecError(ValueError):
    """The WorkerAutoscaler's spec holds a value the operator cannot act on."""


@dataclass(frozen=True)
class AutoscalerSpec:
    """The spec of one WorkerAutoscaler, with the defaults of the CRD."""

    target: str
    queue: str = "default"
    policy: Policy = field(default_factory=Policy)
    poll_interval: float = 5.0
    paused: bool = False

    @property
    def stale_after(self) -> float:
        """How old the scheduler's backlog figures may be before they are not trusted."""
        return max(3 * self.poll_interval, STALE_MINIMUM)


def _integer(spec: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise SpecError(f"spec.{key}={value!r} is not a whole number")
    if value < minimum:
        raise SpecError(f"spec.{key}={value!r} must be at least {minimum}")
    return int(value)


def _seconds(spec: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"spec.{key}={value!r} is not a number of seconds")
    if value < minimum:
        raise SpecError(f"spec.{key}={value!r} must be at least {minimum}")
    return float(value)


def parse_spec(spec: Mapping[str, Any]) -> AutoscalerSpec:
    """Read a WorkerAutoscaler's spec; raise :class:`SpecError` naming the bad field."""
    ref = spec.get("scaleTargetRef")
    target = ref.get("name") if isinstance(ref, Mapping) else None
    if not isinstance(target, str) or not target:
        raise SpecError("spec.scaleTargetRef.name is required (the worker Deployment's name)")
    queue = spec.get("queue", "default")
    if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
        raise SpecError(f"spec.queue={queue!r} is not a queue name")
    minimum = _integer(spec, "minReplicas", 0, 0)
    maximum = _integer(spec, "maxReplicas", 20, 1)
    if maximum < minimum:
        raise SpecError(f"spec.maxReplicas={maximum} is below spec.minReplicas={minimum}")
    policy = Policy(
        min_replicas=minimum,
        max_replicas=maximum,
        target_backlog_per_replica=_integer(spec, "targetBacklogPerReplica", 100, 1),
        activation_backlog=_integer(spec, "activationBacklog", 0, 0),
        scale_down_stabilization=_seconds(spec, "scaleDownStabilizationSeconds", 60, 0),
        scale_up_max_step=_integer(spec, "scaleUpMaxStep", 4, 0),
    )
    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        raise SpecError(f"spec.paused={paused!r} is not true or false")
    return AutoscalerSpec(
        target=target,
        queue=queue,
        policy=policy,
        # Below a tenth of a second the operator would hammer Redis and the API server.
        poll_interval=_seconds(spec, "pollIntervalSeconds", 5, 0.1),
        paused=paused,
    )


class ConditionType(enum.StrEnum):
    READY = "Ready"
    """The autoscaler can see its target and its queue and acts (or is paused on purpose)."""
    ACTIVE = "Active"
    """There is work: the backlog is above the activation threshold, or jobs are running."""
    STALE = "Stale"
    """The scheduler's figures are missing or old: due rows are not counted, no scale-down."""


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str
    message: str

    def render(self, previous: list[Any], now: str) -> dict[str, str]:
        """The status entry; ``lastTransitionTime`` moves only when ``status`` flips."""
        status = "True" if self.status else "False"
        since = now
        for old in previous:
            if (
                isinstance(old, Mapping)
                and old.get("type") == self.type.value
                and old.get("status") == status
                and isinstance(old.get("lastTransitionTime"), str)
            ):
                since = old["lastTransitionTime"]
        return {
            "type": self.type.value,
            "status": status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": since,
        }


def timestamp(at: datetime.datetime | None = None) -> str:
    """RFC 3339 in UTC with a ``Z``, as Kubernetes writes it."""
    at = at or datetime.datetime.now(datetime.UTC)
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_conditions(
    conditions: list[Condition], previous_status: Mapping[str, Any], now: str
) -> list[dict[str, str]]:
    """The new conditions, plus the previous ones of types this poll could not judge.

    When Redis is down, Active and Stale cannot be assessed: they keep their last value
    (with its time) rather than vanish, and Ready says why they are not current.
    """
    previous = previous_status.get("conditions")
    previous_list = list(previous) if isinstance(previous, list) else []
    rendered = [condition.render(previous_list, now) for condition in conditions]
    judged = {condition.type.value for condition in conditions}
    kept = [
        dict(old)
        for old in previous_list
        if isinstance(old, Mapping) and old.get("type") not in judged
    ]
    return rendered + kept
