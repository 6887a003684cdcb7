"""The scaling rule: how many workers a queue's backlog calls for.

A pure function of the policy (the WorkerAutoscaler's spec), the replicas running now, the
observed backlog and a short history of earlier recommendations. HPA semantics, plus what
HPA cannot do (scale to zero) and what KEDA's redis-streams scaler misses (in-flight work):

* the recommendation is ``clamp(ceil(backlog / target), min, max)``, left at the current
  count while the backlog per replica is within 10% of the target (no churn on noise);
* scale-up happens at once, at most ``scale_up_max_step`` replicas per decision;
* scale-down takes the highest recommendation over the stabilization window, so a dip
  shorter than the window never removes workers;
* from zero, only a backlog above ``activation_backlog`` wakes the workers;
* to zero, only when the backlog was 0 and nothing was running for the whole window;
* stale scheduler figures never justify a scale-down (the stream alone may still raise).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

TOLERANCE_DIVISOR = 10
"""The backlog may stray 1/10 (10%) from the replicas' capacity before replicas change."""


class Reason(enum.StrEnum):
    """Why a decision came out as it did; used in events, conditions and logs."""

    SCALE_UP = "ScaleUp"
    ACTIVATION = "Activation"
    SCALE_DOWN = "ScaleDown"
    SCALE_TO_ZERO = "ScaleToZero"
    WITHIN_TOLERANCE = "WithinTolerance"
    STABILIZING = "Stabilizing"
    STALE_HOLD = "StaleHold"
    BELOW_ACTIVATION = "BelowActivation"
    OUT_OF_BOUNDS = "OutOfBounds"


@dataclass(frozen=True)
class Policy:
    """The scaling knobs of one WorkerAutoscaler (validated: see ``resource.parse_spec``)."""

    min_replicas: int = 0
    max_replicas: int = 20
    target_backlog_per_replica: int = 100
    activation_backlog: int = 0
    scale_down_stabilization: float = 60.0
    scale_up_max_step: int = 4
    """0 means unlimited."""

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Signal:
    """What the operator saw of one queue."""

    backlog: int
    """Stream lag + pending entries + due rows not yet dispatched (when known)."""
    running: int | None
    """Jobs in state running, from the scheduler's figures; None when unknown or stale."""
    stale: bool = False
    """The scheduler's figures are missing or old: do not trust them to scale down."""

    @property
    def idle(self) -> bool:
        """Nothing queued and, as far as we know for sure, nothing running."""
        return self.backlog == 0 and self.running == 0 and not self.stale


@dataclass(frozen=True)
class Recommendation:
    """The replicas the backlog called for at a moment (before stabilization)."""

    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    """The outcome of one :func:`decide` call, with the history to pass to the next one."""

    desired: int
    recommendation: int
    reason: Reason
    history: tuple[Recommendation, ...]

    def direction(self, current: int) -> str:
        """``up``, ``down`` or ``none``: the label of the decisions metric."""
        if self.desired > current:
            return "up"
        if self.desired < current:
            return "down"
        return "none"


def recommend(policy: Policy, current: int, signal: Signal) -> int:
    """The replicas this signal alone calls for, with tolerance, bounds and activation."""
    if signal.idle:
        wanted = 0
    elif signal.backlog == 0:
        # Nothing queued but work may still be running (or we cannot tell): keep one worker
        # rather than kill in-flight jobs; the window decides when it is really idle.
        wanted = 1
    else:
        wanted = math.ceil(signal.backlog / policy.target_backlog_per_replica)
        if current > 0 and _within_tolerance(policy, current, signal.backlog):
            wanted = current
    if current == 0 and signal.backlog <= policy.activation_backlog:
        # From zero, only a backlog above the activation threshold wakes the workers.
        wanted = 0
    return policy.clamp(wanted)


def _within_tolerance(policy: Policy, current: int, backlog: int) -> bool:
    # |backlog / capacity - 1| <= 10%, in integers: 1100 against 1000 must not be 1.1000000001.
    capacity = current * policy.target_backlog_per_replica
    return abs(backlog - capacity) * TOLERANCE_DIVISOR <= capacity


def decide(
    policy: Policy,
    current: int,
    signal: Signal,
    history: tuple[Recommendation, ...],
    now: float,
) -> Decision:
    """Desired replicas for ``current`` replicas seeing ``signal`` at time ``now`` (seconds).

    ``history`` is the ``history`` of the previous decision (empty the first time): the
    current replicas count as the recommendation in effect before the first observation,
    so nothing is scaled down until a whole window has been watched.
    """
    if not history:
        history = (Recommendation(now, current),)
    wanted = recommend(policy, current, signal)
    cutoff = now - policy.scale_down_stabilization
    history = (*_prune(history, cutoff), Recommendation(now, wanted))

    if current > policy.max_replicas or current < policy.min_replicas:
        # Bounds win over stabilization and step (someone scaled by hand, or the spec moved).
        return Decision(policy.clamp(current), wanted, Reason.OUT_OF_BOUNDS, history)
    if wanted > current:
        step = policy.scale_up_max_step
        desired = min(wanted, current + step) if step > 0 else wanted
        reason = Reason.ACTIVATION if current == 0 else Reason.SCALE_UP
        return Decision(desired, wanted, reason, history)
    if wanted == current:
        reason = Reason.BELOW_ACTIVATION if current == 0 else Reason.WITHIN_TOLERANCE
        return Decision(current, wanted, reason, history)
    if signal.stale:
        return Decision(current, wanted, Reason.STALE_HOLD, history)
    # The highest recommendation in effect at any moment of the window: the one in force at
    # the window's start (kept by _prune) and every later one.
    stabilized = min(current, max(item.replicas for item in history))
    if stabilized == current:
        return Decision(current, wanted, Reason.STABILIZING, history)
    reason = Reason.SCALE_TO_ZERO if stabilized == 0 else Reason.SCALE_DOWN
    return Decision(stabilized, wanted, reason, history)


def _prune(history: tuple[Recommendation, ...], cutoff: float) -> tuple[Recommendation, ...]:
    """Keep the recommendations after ``cutoff`` and the last one at or before it."""
    kept = [item for item in history if item.at > cutoff]
    before = [item for item in history if item.at <= cutoff]
    return (*before[-1:], *kept)
