"""The chart lints, renders for every ci/*-values.yaml and is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, NAMESPACE, Render, find, one, run_helm

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Objects of CRDs kubernetes-validate has no schema for; checked by hand below.
CUSTOM_KINDS = {"WorkerAutoscaler", "ServiceMonitor"}

ci_values = pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])


def test_ci_values_cover_every_autoscaling_mode_and_all_features() -> None:
    names = {path.name for path in CI_VALUES}
    assert {
        "default-values.yaml",
        "hpa-values.yaml",
        "operator-values.yaml",
        "all-features-on-values.yaml",
    } <= names


@pytest.mark.usefixtures("helm")
def test_helm_lint_strict_with_defaults() -> None:
    run_helm("lint", "--strict", str(CHART))


@pytest.mark.usefixtures("helm")
@ci_values
def test_helm_lint_strict(values: Path) -> None:
    run_helm("lint", "--strict", str(CHART), "-f", str(values))


@ci_values
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_manifests_are_valid_kubernetes(
    render: Render, values: Path, version: str
) -> None:
    manifests = render(values)
    checked = 0
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked >= 8


@ci_values
def test_every_object_is_labelled_and_namespaced_by_the_release(
    render: Render, values: Path
) -> None:
    for manifest in render(values):
        if manifest["kind"] == "CustomResourceDefinition":
            continue
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "tf", manifest["metadata"]["name"]
        assert labels["app.kubernetes.io/name"] == "taskforge"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert "namespace" not in manifest["metadata"], "helm sets the namespace"


@ci_values
def test_rendered_worker_autoscalers_match_the_crd_schema(render: Render, values: Path) -> None:
    crd = yaml.safe_load((CHART / "crds" / "workerautoscalers.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for autoscaler in find(render(values), "WorkerAutoscaler"):
        assert autoscaler["apiVersion"] == "taskforge.io/v1alpha1"
        jsonschema.validate(autoscaler, schema)
        spec = autoscaler["spec"]
        assert spec["minReplicas"] <= spec["maxReplicas"]


def test_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    manifests = render(CHART / "ci" / "all-features-on-values.yaml")
    monitor = one(manifests, "ServiceMonitor", "tf-taskforge")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(manifests, "Service", "tf-taskforge-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_optional_resources_are_off_by_default(render: Render) -> None:
    kinds = {m["kind"] for m in render()}
    assert kinds.isdisjoint(
        {
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
            "Ingress",
            "HorizontalPodAutoscaler",
            "WorkerAutoscaler",
            "Role",
        }
    )
    assert {"Deployment", "Service", "Job", "ServiceAccount", "CustomResourceDefinition"} <= kinds


def test_all_features_render_every_optional_resource(render: Render) -> None:
    kinds = {m["kind"] for m in render(CHART / "ci" / "all-features-on-values.yaml")}
    assert {
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "Ingress",
        "WorkerAutoscaler",
        "Role",
        "RoleBinding",
        "Secret",
    } <= kinds
