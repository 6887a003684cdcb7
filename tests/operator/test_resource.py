"""Reading the WorkerAutoscaler spec and writing its conditions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from taskforge.operator.resource import (
    GROUP,
    PLURAL,
    VERSION,
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


def test_conditions_this_poll_could_not_judge_keep_their_last_value() -> None:
    before = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaleUp", "lastTransitionTime": "T0"},
            {"type": "Active", "status": "True", "reason": "Busy", "lastTransitionTime": "T0"},
        ]
    }
    down = Condition(ConditionType.READY, False, "RedisUnavailable", "refused")
    rendered = render_conditions([down], before, "T1")
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in rendered] == [
        ("Ready", "False", "T1"),
        ("Active", "True", "T0"),
    ]


ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "charts" / "taskforge" / "crds" / "workerautoscalers.yaml"
EXAMPLE = ROOT / "deploy" / "examples" / "workerautoscaler.yaml"
SPEC_DEFAULTS = {
    "queue": "default",
    "minReplicas": 0,
    "maxReplicas": 20,
    "targetBacklogPerReplica": 100,
    "activationBacklog": 0,
    "pollIntervalSeconds": 5,
    "scaleDownStabilizationSeconds": 60,
    "scaleUpMaxStep": 4,
    "paused": False,
}
STATUS_FIELDS = {
    "currentReplicas",
    "desiredReplicas",
    "backlog",
    "lastScaleTime",
    "observedGeneration",
    "conditions",
}


def _crd_schema() -> dict[str, Any]:
    if not CRD.exists():
        pytest.skip("the chart's CRD is not there (yet)")
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    assert "status" in version["subresources"]
    assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == (GROUP, PLURAL)
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]
    return schema


def test_the_crd_declares_the_spec_and_defaults_the_operator_reads() -> None:
    spec = _crd_schema()["spec"]["properties"]
    assert set(spec) == {"scaleTargetRef", *SPEC_DEFAULTS}
    assert {name: spec[name].get("default") for name in SPEC_DEFAULTS} == SPEC_DEFAULTS
    # The defaults the API server fills in mean the same as the operator's own.
    assert parse_spec({**TARGET, **SPEC_DEFAULTS}) == parse_spec(TARGET)


def test_the_crd_declares_every_status_field_the_operator_writes() -> None:
    assert set(_crd_schema()["status"]["properties"]) >= STATUS_FIELDS


def test_the_example_autoscaler_is_a_valid_spec() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert (example["apiVersion"], example["kind"]) == (f"{GROUP}/{VERSION}", "WorkerAutoscaler")
    spec = parse_spec(example["spec"])
    assert (spec.queue, spec.policy.min_replicas, spec.policy.activation_backlog) == ("mail", 0, 5)
