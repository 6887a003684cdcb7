"""worker.autoscaling.mode: none (fixed), hpa (queue depth), operator (WorkerAutoscaler)."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CHART, HelmError, Render, find, one

WORKER = "tf-taskforge-worker"


def test_mode_none_fixes_the_worker_replicas(render: Render) -> None:
    manifests = render(sets={"worker.replicas": 7})
    assert one(manifests, "Deployment", WORKER)["spec"]["replicas"] == 7
    assert not find(manifests, "HorizontalPodAutoscaler")
    assert not find(manifests, "WorkerAutoscaler")
    assert not find(manifests, "Deployment", "tf-taskforge-operator")


def test_mode_hpa_scales_workers_on_queue_depth(render: Render) -> None:
    manifests = render(CHART / "ci" / "hpa-values.yaml")
    worker = one(manifests, "Deployment", WORKER)
    assert "replicas" not in worker["spec"], "an autoscaled Deployment leaves replicas to the HPA"
    hpa = one(manifests, "HorizontalPodAutoscaler", WORKER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 30)
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": "taskforge_queue_depth",
        "selector": {"matchLabels": {"queue": "mail"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "50"}
    behavior = spec["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert behavior["scaleUp"]["policies"]
    assert not find(manifests, "WorkerAutoscaler")
    assert not find(manifests, "Deployment", "tf-taskforge-operator")


def test_hpa_queue_defaults_to_the_first_worker_queue(render: Render) -> None:
    manifests = render(sets={"worker.autoscaling.mode": "hpa", "worker.queues": "{bulk,default}"})
    hpa = one(manifests, "HorizontalPodAutoscaler", WORKER)
    selector = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]
    assert selector == {"matchLabels": {"queue": "bulk"}}


def test_mode_operator_renders_a_worker_autoscaler_and_the_operator(render: Render) -> None:
    manifests = render(CHART / "ci" / "operator-values.yaml")
    assert "replicas" not in one(manifests, "Deployment", WORKER)["spec"]
    autoscaler = one(manifests, "WorkerAutoscaler", WORKER)
    assert autoscaler["spec"] == {
        "scaleTargetRef": {"name": WORKER},
        "queue": "default",
        "minReplicas": 0,
        "maxReplicas": 10,
        "targetBacklogPerReplica": 20,
        "activationBacklog": 5,
        "pollIntervalSeconds": 2,
        "scaleDownStabilizationSeconds": 120,
        "scaleUpMaxStep": 2,
        "paused": False,
    }
    one(manifests, "Deployment", "tf-taskforge-operator")
    one(manifests, "Role", "tf-taskforge-operator")
    one(manifests, "RoleBinding", "tf-taskforge-operator")
    one(manifests, "ServiceAccount", "tf-taskforge-operator")
    assert not find(manifests, "HorizontalPodAutoscaler")


def test_operator_enabled_alone_deploys_it_without_touching_the_workers(render: Render) -> None:
    manifests = render(sets={"operator.enabled": "true"})
    one(manifests, "Deployment", "tf-taskforge-operator")
    assert one(manifests, "Deployment", WORKER)["spec"]["replicas"] == 2
    assert not find(manifests, "WorkerAutoscaler")


@pytest.mark.usefixtures("helm")
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"worker.autoscaling.mode": "hpa", "worker.autoscaling.minReplicas": 0}, "at least 1"),
        (
            {
                "worker.autoscaling.mode": "operator",
                "worker.autoscaling.maxReplicas": 2,
                "worker.autoscaling.minReplicas": 3,
            },
            "must not exceed",
        ),
    ],
    ids=["hpa-cannot-scale-to-zero", "min-above-max"],
)
def test_impossible_autoscaling_fails_the_render(
    render: Render, sets: dict[str, object], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(sets=sets)
