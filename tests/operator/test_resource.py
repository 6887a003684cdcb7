"""Reading the WorkerAutoscaler spec and writing its conditions."""

from __future__ import annotations

from typing import Any

import pytest
from taskforge.operator.resource import (
    Condition,
    ConditionType,
    SpecError,
    parse_spec,
    render_conditions,
)
from taskforge.operator.scaling import Policy

TARGET = {"scaleTargetRef": {"name": "taskforge-worker"}}


def test_spec_defaults_are_the_crd_defaults() -> None:
    spec = parse_spec(TARGET)
    assert (spec.target, spec.queue, spec.poll_interval, spec.paused) == (
        "taskforge-worker",
        "default",
        5.0,
        False,
    )
    assert spec.policy == Policy(
        min_replicas=0,
        max_replicas=20,
        target_backlog_per_replica=100,
        activation_backlog=0,
        scale_down_stabilization=60.0,
        scale_up_max_step=4,
    )
    assert spec.stale_after == 30.0  # max(3 x 5 s, 30 s)
    assert parse_spec({**TARGET, "pollIntervalSeconds": 20}).stale_after == 60.0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.scaleTargetRef.name"),
        ({"scaleTargetRef": {}}, "spec.scaleTargetRef.name"),
        ({**TARGET, "queue": "no spaces"}, "spec.queue"),
        ({**TARGET, "minReplicas": -1}, "spec.minReplicas"),
        ({**TARGET, "minReplicas": 5, "maxReplicas": 3}, "spec.maxReplicas"),
        ({**TARGET, "targetBacklogPerReplica": 0}, "spec.targetBacklogPerReplica"),
        ({**TARGET, "scaleUpMaxStep": 1.5}, "spec.scaleUpMaxStep"),
        ({**TARGET, "activationBacklog": True}, "spec.activationBacklog"),
        ({**TARGET, "pollIntervalSeconds": 0}, "spec.pollIntervalSeconds"),
        ({**TARGET, "scaleDownStabilizationSeconds": "1m"}, "spec.scaleDownStabilizationSeconds"),
        ({**TARGET, "paused": "yes"}, "spec.paused"),
    ],
)
def test_bad_spec_values_are_named(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(spec)


def test_transition_time_moves_only_when_the_status_flips() -> None:
    before = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaleUp", "lastTransitionTime": "T0"},
            {"type": "Stale", "status": "False", "reason": "Fresh", "lastTransitionTime": "T0"},
        ]
    }
    rendered = render_conditions(
        [
            Condition(ConditionType.READY, True, "WithinTolerance", "steady"),
            Condition(ConditionType.STALE, True, "FiguresStale", "old"),
        ],
        before,
        "T1",
    )
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in rendered] == [
        ("Ready", "True", "T0"),
        ("Stale", "True", "T1"),
    ]
