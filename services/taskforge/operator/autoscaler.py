"""One WorkerAutoscaler's poll: observe the target and the queue, decide, act, report.

Plain async functions with no kopf in them: the kopf daemon in ``handlers`` only unpacks its
arguments and calls :func:`run_autoscaler`. Nothing here raises for an expected failure (a
missing Deployment, Redis down, a bad spec): each becomes the Ready condition, a Warning event
the first time it appears, and a count in ``taskforge_operator_errors_total``; the replicas
are left as they are until the autoscaler can see again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from taskforge.operator.backlog import Backlog, BacklogUnavailable, read_backlog
from taskforge.operator.kube import KubeClient, KubeError, NotFound
from taskforge.operator.metrics import Metrics
from taskforge.operator.resource import (
    AutoscalerSpec,
    Condition,
    ConditionType,
    SpecError,
    parse_spec,
    render_conditions,
    timestamp,
)
from taskforge.operator.scaling import Decision, Reason, Recommendation, Signal, decide

logger = logging.getLogger("taskforge.operator")

EventSink = Callable[[str, str, str], None]
"""``emit(type, reason, message)``: posts a Kubernetes Event about the autoscaler."""

RETRY_INTERVAL = 5.0
"""Poll interval while the spec cannot be read (it has no usable pollIntervalSeconds)."""


@dataclass
class Runtime:
    """What every autoscaler shares: the clients, the metrics and the clocks."""

    redis: aioredis.Redis
    kube: KubeClient
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    """For the stabilization window: never jumps."""
    wall: Callable[[], float] = time.time
    """For the scheduler's ``updated_at`` (unix seconds) and timestamps in the status."""


@dataclass
class AutoscalerState:
    """What one autoscaler remembers between polls.

    Kept in memory, like HPA's recommendations: after an operator restart the window starts
    anew from the replicas found, so a restart can delay a scale-down but never cause one.
    """

    history: tuple[Recommendation, ...] = ()
    written: dict[str, Any] | None = None
    problem: str | None = None
    last_scale_time: str | None = None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass
class Poll:
    """What one poll saw and did, turned into status, conditions, metrics and events."""

    spec: AutoscalerSpec | None = None
    current: int | None = None
    backlog: Backlog | None = None
    decision: Decision | None = None
    problem: Problem | None = None
    conditions: list[Condition] = field(default_factory=list)


async def run_autoscaler(runtime: Runtime, body: Mapping[str, Any], emit: EventSink) -> None:
    """Poll forever at the spec's interval (re-read every time); ends by cancellation."""
    meta = body.get("metadata", {})
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    state = AutoscalerState(last_scale_time=(body.get("status") or {}).get("lastScaleTime"))
    try:
        while True:
            try:
                interval = await poll_once(runtime, state, body, emit)
            except Exception:  # a bug must not stop scaling for good: log, count, go on
                logger.exception(
                    "autoscaler poll failed",
                    extra={"action": "autoscale", "autoscaler": name, "namespace": namespace},
                )
                runtime.metrics.errors.labels("Unexpected").inc()
                interval = RETRY_INTERVAL
            await asyncio.sleep(interval)
    finally:
        runtime.metrics.forget(name, namespace)


async def poll_once(
    runtime: Runtime, state: AutoscalerState, body: Mapping[str, Any], emit: EventSink
) -> float:
    """One observe-decide-act-report cycle; returns the seconds until the next one."""
    meta = body.get("metadata", {})
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    poll = Poll()
    try:
        poll.spec = parse_spec(body.get("spec") or {})
    except SpecError as exc:
        poll.problem = Problem("InvalidSpec", str(exc))
    if poll.spec is not None:
        await _observe_and_act(runtime, state, namespace, poll, emit)
    if poll.problem is not None:
        runtime.metrics.errors.labels(poll.problem.reason).inc()
        if state.problem != poll.problem.reason:
            emit("Warning", poll.problem.reason, poll.problem.message)
            logger.warning(
                poll.problem.message,
                extra={"action": "autoscale", "autoscaler": name, "reason": poll.problem.reason},
            )
    elif state.problem is not None:
        emit("Normal", "Recovered", f"observing again after {state.problem}")
    state.problem = poll.problem.reason if poll.problem is not None else None
    await _report(runtime, state, body, poll)
    return poll.spec.poll_interval if poll.spec is not None else RETRY_INTERVAL


async def _observe_and_act(
    runtime: Runtime, state: AutoscalerState, namespace: str, poll: Poll, emit: EventSink
) -> None:
    spec = poll.spec
    assert spec is not None
    try:
        poll.current = (await runtime.kube.get_scale(namespace, spec.target)).replicas
    except NotFound:
        poll.problem = Problem(
            "TargetNotFound", f"deployment/{spec.target} not found in namespace {namespace}"
        )
        return
    except KubeError as exc:
        poll.problem = Problem("KubernetesError", f"reading deployment/{spec.target}: {exc}")
        return
    try:
        poll.backlog = await read_backlog(
            runtime.redis,
            spec.queue,
            stale_after=spec.stale_after,
            lag_cap=spec.policy.max_replicas * spec.policy.target_backlog_per_replica + 1,
            now=runtime.wall(),
        )
    except BacklogUnavailable as exc:
        poll.problem = Problem("RedisUnavailable", f"reading queue {spec.queue!r}: {exc}")
        return
    signal = Signal(poll.backlog.total, poll.backlog.running, poll.backlog.stale)
    poll.decision = decide(spec.policy, poll.current, signal, state.history, runtime.clock())
    state.history = poll.decision.history
    desired = poll.decision.desired
    direction = poll.decision.direction(poll.current) if not spec.paused else "none"
    runtime.metrics.decisions.labels(direction).inc()
    if spec.paused or desired == poll.current:
        return
    try:
        await runtime.kube.set_replicas(namespace, spec.target, desired)
    except KubeError as exc:
        poll.problem = Problem("ScaleFailed", f"scaling deployment/{spec.target}: {exc}")
        return
    state.last_scale_time = timestamp()
    verb = "ScaledUp" if desired > poll.current else "ScaledDown"
    message = (
        f"deployment/{spec.target} {poll.current} -> {desired} replicas: backlog "
        f"{signal.backlog} on queue {spec.queue!r}, target "
        f"{spec.policy.target_backlog_per_replica}/replica ({poll.decision.reason.value})"
    )
    emit("Normal", verb, message)
    logger.info(message, extra={"action": "scale", "queue": spec.queue, "replicas": desired})


def _conditions(poll: Poll) -> list[Condition]:
    ready: Condition
    if poll.problem is not None:
        ready = Condition(ConditionType.READY, False, poll.problem.reason, poll.problem.message)
    elif poll.spec is not None and poll.spec.paused:
        ready = Condition(
            ConditionType.READY, True, "Paused", "spec.paused is true: not scaling; " + _why(poll)
        )
    else:
        assert poll.decision is not None
        ready = Condition(ConditionType.READY, True, poll.decision.reason.value, _why(poll))
    conditions = [ready]
    if poll.backlog is not None and poll.spec is not None:
        backlog, policy = poll.backlog, poll.spec.policy
        running = "unknown" if backlog.running is None else str(backlog.running)
        active = backlog.total > policy.activation_backlog or (backlog.running or 0) > 0
        conditions.append(
            Condition(
                ConditionType.ACTIVE,
                active,
                "BacklogAboveActivation" if active else "Idle",
                f"backlog {backlog.total}, running {running}, "
                f"activation above {policy.activation_backlog}",
            )
        )
        if backlog.figures is None:
            stale = Condition(
                ConditionType.STALE, True, "FiguresMissing",
                "the scheduler has not published taskforge:{" + poll.spec.queue + "}:backlog; "
                "counting the stream only and holding scale-down",
            )  # fmt: skip
        elif backlog.stale:
            stale = Condition(
                ConditionType.STALE, True, "FiguresStale",
                f"the scheduler's figures are older than {poll.spec.stale_after:g}s; "
                "counting the stream only and holding scale-down",
            )  # fmt: skip
        else:
            stale = Condition(ConditionType.STALE, False, "Fresh", "scheduler figures are fresh")
        conditions.append(stale)
    return conditions


def _why(poll: Poll) -> str:
    assert poll.decision is not None and poll.backlog is not None and poll.spec is not None
    stream = poll.backlog.stream
    due = poll.backlog.figures.due if poll.backlog.figures and not poll.backlog.stale else 0
    return (
        f"backlog {poll.backlog.total} (lag {stream.lag}, pending {stream.pending}, due {due}) "
        f"recommends {poll.decision.recommendation}, desired {poll.decision.desired}"
        + (" (stabilizing scale-down)" if poll.decision.reason is Reason.STABILIZING else "")
    )


async def _report(
    runtime: Runtime, state: AutoscalerState, body: Mapping[str, Any], poll: Poll
) -> None:
    meta = body.get("metadata", {})
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    previous = body.get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        "conditions": render_conditions(_conditions(poll), previous, timestamp()),
        "lastScaleTime": state.last_scale_time,
    }
    if poll.current is not None:
        status["currentReplicas"] = poll.current
        # While paused this is what the autoscaler would do, so a resume holds no surprise.
        desired = poll.decision.desired if poll.decision is not None else poll.current
        status["desiredReplicas"] = desired
    if poll.backlog is not None:
        status["backlog"] = poll.backlog.total
    if poll.current is not None and poll.backlog is not None and poll.spec is not None:
        runtime.metrics.observe(
            name,
            namespace,
            backlog=poll.backlog.total,
            current=poll.current,
            desired=status["desiredReplicas"],
            stale=poll.backlog.stale,
        )
    if status == state.written:
        return
    try:
        await runtime.kube.patch_status(namespace, name, status)
    except KubeError as exc:
        runtime.metrics.errors.labels("StatusFailed").inc()
        logger.warning(
            f"writing the status of {namespace}/{name} failed: {exc}",
            extra={"action": "report", "autoscaler": name},
        )
        return
    state.written = status
