"""The scaling rule: properties (hypothesis) and the README operator section's examples."""

from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from taskforge.operator.scaling import (
    Decision,
    Policy,
    Reason,
    Recommendation,
    Signal,
    decide,
    recommend,
)

WINDOW = 60.0


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    minimum = draw(st.integers(0, 5))
    return Policy(
        min_replicas=minimum,
        max_replicas=draw(st.integers(max(minimum, 1), 30)),
        target_backlog_per_replica=draw(st.integers(1, 500)),
        activation_backlog=draw(st.integers(0, 50)),
        scale_down_stabilization=draw(st.sampled_from([0.0, 5.0, WINDOW])),
        scale_up_max_step=draw(st.integers(0, 6)),
    )


signals = st.builds(
    Signal,
    backlog=st.integers(0, 20_000),
    running=st.one_of(st.none(), st.integers(0, 50)),
    stale=st.booleans(),
)
gaps = st.floats(0.5, 30.0)


def run(
    policy: Policy, start: int, observations: list[tuple[float, Signal]]
) -> list[tuple[float, int, Decision]]:
    """Feed observations (gap before each, signal) to decide(), acting on every decision."""
    current, now = start, 1000.0
    history: tuple[Recommendation, ...] = ()
    steps = []
    for gap, signal in observations:
        now += gap
        decision = decide(policy, current, signal, history, now)
        steps.append((now, current, decision))
        current, history = decision.desired, decision.history
    return steps


@given(policies(), st.integers(0, 40), signals, st.floats(0, 1e6))
def test_desired_is_always_within_min_and_max(
    policy: Policy, current: int, signal: Signal, now: float
) -> None:
    decision = decide(policy, current, signal, (), now)
    assert policy.min_replicas <= decision.desired <= policy.max_replicas


@given(policies(), st.data(), st.lists(st.tuples(gaps, signals), min_size=1, max_size=12))
def test_desired_is_monotone_in_backlog(
    policy: Policy, data: st.DataObject, observations: list[tuple[float, Signal]]
) -> None:
    steps = run(
        policy, data.draw(st.integers(policy.min_replicas, policy.max_replicas)), observations
    )
    now, current, last = steps[-1]
    history = last.history[:-1]  # the state before the last decision
    low = data.draw(st.integers(0, 5000))
    high = low + data.draw(st.integers(0, 5000))
    running, stale = data.draw(st.one_of(st.none(), st.integers(0, 5))), data.draw(st.booleans())
    smaller = decide(policy, current, Signal(low, running, stale), history, now)
    larger = decide(policy, current, Signal(high, running, stale), history, now)
    assert smaller.desired <= larger.desired


@given(policies(), st.data(), st.lists(st.tuples(gaps, signals), min_size=1, max_size=25))
def test_never_scales_down_while_a_higher_recommendation_is_in_the_window(
    policy: Policy, data: st.DataObject, observations: list[tuple[float, Signal]]
) -> None:
    start = data.draw(st.integers(policy.min_replicas, policy.max_replicas))
    steps = run(policy, start, observations)
    # Every recommendation ever made, the replicas found first counting as the first one.
    made = [(steps[0][0], start)] + [(at, d.recommendation) for at, _, d in steps]
    for now, current, decision in steps:
        if decision.desired >= current:
            continue
        cutoff = now - policy.scale_down_stabilization
        in_force = [r for at, r in made if cutoff < at <= now]
        before = [r for at, r in made if at <= cutoff]
        highest = max(in_force + before[-1:])
        assert decision.desired >= highest, (now, current, decision)


@given(policies(), st.data(), st.lists(st.tuples(gaps, signals), min_size=1, max_size=25))
def test_scales_to_zero_only_after_a_whole_idle_window(
    policy: Policy, data: st.DataObject, observations: list[tuple[float, Signal]]
) -> None:
    start = data.draw(st.integers(policy.min_replicas, policy.max_replicas))
    steps = run(policy, start, observations)
    first = steps[0][0]
    for index, (now, current, decision) in enumerate(steps):
        if decision.desired == 0 and current > 0:
            assert now - first >= policy.scale_down_stabilization
            window = [
                signal
                for (at, _, _), (_, signal) in zip(steps, observations, strict=True)
                if now - policy.scale_down_stabilization <= at <= now
            ]
            assert all(signal.idle for signal in window), index


@given(policies(), st.integers(0, 40), signals, st.lists(gaps, min_size=2, max_size=30))
def test_constant_backlog_never_flaps(
    policy: Policy, start: int, signal: Signal, timeline: list[float]
) -> None:
    steps = run(policy, start, [(gap, signal) for gap in timeline])
    directions = {d.direction(current) for _, current, d in steps} - {"none"}
    assert len(directions) <= 1, [(c, d.desired) for _, c, d in steps]


@given(policies(), st.data(), signals)
def test_scale_up_adds_at_most_the_step(
    policy: Policy, data: st.DataObject, signal: Signal
) -> None:
    assume(policy.scale_up_max_step > 0)
    current = data.draw(st.integers(policy.min_replicas, policy.max_replicas))
    decision = decide(policy, current, signal, (), 0.0)
    assert decision.desired - current <= policy.scale_up_max_step


@given(policies(), st.integers(0, 20_000), st.one_of(st.none(), st.integers(0, 9)))
def test_activation_from_zero_needs_backlog_above_the_threshold(
    policy: Policy, backlog: int, running: int | None
) -> None:
    policy = Policy(**{**policy.__dict__, "min_replicas": 0})
    decision = decide(policy, 0, Signal(backlog, running), (), 0.0)
    if backlog <= policy.activation_backlog:
        assert decision.desired == 0
        assert decision.reason is Reason.BELOW_ACTIVATION
    else:
        assert decision.desired >= 1
        assert decision.reason is Reason.ACTIVATION


@given(policies(), st.integers(0, 40), st.integers(0, 20_000), st.lists(gaps, max_size=10))
def test_stale_figures_never_scale_down(
    policy: Policy, start: int, backlog: int, timeline: list[float]
) -> None:
    steps = run(policy, start, [(gap, Signal(backlog, None, stale=True)) for gap in timeline])
    for _, current, decision in steps:
        if policy.min_replicas <= current <= policy.max_replicas:
            assert decision.desired >= current


# Worked examples (the ones the README's operator section walks through).

POLICY = Policy(
    min_replicas=0,
    max_replicas=20,
    target_backlog_per_replica=100,
    activation_backlog=0,
    scale_down_stabilization=60,
    scale_up_max_step=4,
)
FRESH_IDLE = Signal(0, 0)


def test_backlog_calls_for_ceil_of_backlog_over_target() -> None:
    decision = decide(POLICY, 1, Signal(450, 3), (), 0.0)
    assert decision.recommendation == math.ceil(450 / 100) == 5
    assert decision.desired == 5


def test_scale_up_is_bounded_by_the_step() -> None:
    assert decide(POLICY, 0, Signal(1000, 0), (), 0.0).desired == 4
    assert decide(POLICY, 4, Signal(1000, 4), (), 0.0).desired == 8
    unlimited = Policy(**{**POLICY.__dict__, "scale_up_max_step": 0})
    assert decide(unlimited, 0, Signal(1000, 0), (), 0.0).desired == 10


def test_within_ten_percent_of_target_changes_nothing() -> None:
    for backlog in (900, 1000, 1100):
        decision = decide(POLICY, 10, Signal(backlog, 10), (), 0.0)
        assert (decision.desired, decision.reason) == (10, Reason.WITHIN_TOLERANCE)
    assert recommend(POLICY, 10, Signal(1110, 10)) == 12
    assert recommend(POLICY, 10, Signal(890, 10)) == 9


def test_drained_queue_goes_to_zero_only_after_the_window() -> None:
    history: tuple[Recommendation, ...] = ()
    current = 5
    for now in (0.0, 30.0, 59.0):
        decision = decide(POLICY, current, FRESH_IDLE, history, now)
        assert decision.desired == 5
        assert decision.reason is Reason.STABILIZING
        history = decision.history
    decision = decide(POLICY, current, FRESH_IDLE, history, 60.0)
    assert (decision.desired, decision.reason) == (0, Reason.SCALE_TO_ZERO)


def test_running_jobs_keep_one_worker() -> None:
    history: tuple[Recommendation, ...] = ()
    for now in (0.0, 61.0, 122.0):
        decision = decide(POLICY, 3, Signal(0, running=2), history, now)
        history = decision.history
    assert decision.desired == 1


def test_unknown_running_never_scales_to_zero() -> None:
    history: tuple[Recommendation, ...] = ()
    for now in (0.0, 61.0, 122.0):
        decision = decide(POLICY, 3, Signal(0, running=None), history, now)
        history = decision.history
    assert decision.desired == 1


def test_a_burst_inside_the_window_holds_the_replicas() -> None:
    first = decide(POLICY, 8, Signal(800, 8), (), 0.0)
    burst = decide(POLICY, 8, Signal(790, 8), first.history, 40.0)
    quiet = decide(POLICY, 8, Signal(100, 1), burst.history, 90.0)
    assert quiet.desired == 8  # the recommendation of 8 at t=40 is still in the window
    # 8 was in force until t=90, so the window must slide past 90 before workers go.
    held = decide(POLICY, 8, Signal(100, 1), quiet.history, 149.0)
    assert held.desired == 8
    later = decide(POLICY, 8, Signal(100, 1), held.history, 150.0)
    assert later.desired == 1


def test_stale_figures_hold_but_allow_scale_up() -> None:
    assert decide(POLICY, 5, Signal(0, None, stale=True), (), 100.0).reason is Reason.STALE_HOLD
    assert decide(POLICY, 5, Signal(900, None, stale=True), (), 100.0).desired == 9


def test_replicas_outside_the_bounds_are_brought_back_at_once() -> None:
    bounded = Policy(**{**POLICY.__dict__, "min_replicas": 2, "max_replicas": 6})
    assert decide(bounded, 9, Signal(5000, 9), (), 0.0).desired == 6
    assert decide(bounded, 0, Signal(0, 0), (), 0.0).desired == 2


@settings(max_examples=25)
@given(st.integers(1, 20))
def test_minimum_replicas_are_kept_when_idle(minimum: int) -> None:
    policy = Policy(**{**POLICY.__dict__, "min_replicas": minimum, "max_replicas": 20})
    history: tuple[Recommendation, ...] = ()
    for now in (0.0, 61.0, 122.0):
        decision = decide(policy, 20, FRESH_IDLE, history, now)
        history = decision.history
    assert decision.desired == minimum
